"""The datasets by name: one registry that the configs, the loaders and the CLI read.

A dataset is a `Dataset` record registered with `register_dataset` in the module that defines
its loader (flatgen.data imports each such module). It reads its options from the `data`
section of a config (any object with those attributes: flatgen.config.DataConfig, or the
classifier study's DataSpec), says which of them it uses, and gives the shape of one sample
before any file is read, so a config can be checked against the model before training starts.
Adding a dataset is one new module (imported by flatgen.data) plus its test. Import these
functions from flatgen.data, which registers the built-in datasets first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flatgen.registry import Registry

# the loaders' return types are torch tensors; torch is not imported here so that the registry
# itself stays light
Split = tuple[Any, Any]


@dataclass(frozen=True)
class Dataset:
    """One dataset: its name, loaders, options and sample shape.

    load(opts) -> (train, test): samples N x C x H x W in [-1, 1], or N x D vectors.
    shape(opts) -> the shape of one sample, e.g. (1, 8, 8) or (2,), known without reading data.
    options: the fields of the data section this dataset reads (the others are ignored).
    requires_path: data.path must be given.
    check(opts): raises ValueError (one line) for options this dataset cannot use.
    labelled(opts, split) -> (images in [-1, 1], integer labels), for the classifier study;
        None where the dataset has no labels.
    recognizes(path) -> True when a local folder holds this dataset (`--data PATH`).
    """

    name: str
    load: Callable[[Any], Split]
    shape: Callable[[Any], tuple[int, ...]]
    help: str
    options: tuple[str, ...] = ()
    requires_path: bool = False
    check: Callable[[Any], None] | None = None
    labelled: Callable[[Any, str], Split] | None = None
    recognizes: Callable[[Path], bool] | None = None


# name -> Dataset, in registration order (the built-ins first); filled when flatgen.data loads
DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(dataset: Dataset) -> Dataset:
    """Add `dataset` to DATASETS under its name (a name may be taken once)."""
    return DATASETS.register(dataset.name, dataset)


def dataset_names(*, labelled: bool = False) -> tuple[str, ...]:
    """The registered dataset names (only those with labels when `labelled`)."""
    return tuple(n for n, d in DATASETS.items() if not labelled or d.labelled is not None)


def named_datasets() -> tuple[str, ...]:
    """The datasets a name alone selects (`--data NAME`): those that need no data.path."""
    return tuple(n for n, d in DATASETS.items() if not d.requires_path)


def get_dataset(name: str, *, labelled: bool = False) -> Dataset:
    """The registered dataset `name`; ValueError naming the choices otherwise."""
    dataset = DATASETS.get(name, None)
    if dataset is None or (labelled and dataset.labelled is None):
        kind = "labelled dataset" if labelled else "dataset"
        choices = ", ".join(dataset_names(labelled=labelled))
        raise ValueError(f"unknown {kind} {name!r}; choose from {choices}")
    return dataset


def check_data_options(opts: Any) -> None:
    """Validate a data section against its dataset: the name, data.path, the dataset's own
    checks. Raises ValueError with one line."""
    dataset = get_dataset(opts.name)
    if dataset.requires_path and not getattr(opts, "path", None):
        raise ValueError(f"data.path is required for dataset {dataset.name!r}")
    if dataset.check is not None:
        dataset.check(opts)


def load_dataset(opts: Any) -> Split:
    """(train, test) tensors for a data section: images N x C x H x W in [-1, 1], or N x D."""
    return get_dataset(opts.name).load(opts)


def sample_shape(opts: Any) -> tuple[int, ...]:
    """The shape of one sample of the data section's dataset, without reading the data."""
    return tuple(get_dataset(opts.name).shape(opts))


def recognize_path(path: str | Path) -> str | None:
    """The first registered dataset that recognizes the local folder `path`, or None."""
    for dataset in DATASETS.values():
        if dataset.recognizes is not None and dataset.recognizes(Path(path)):
            return dataset.name
    return None
