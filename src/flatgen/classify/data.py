"""Labelled images for the classifier study, pixels mapped from [-1, 1] to [0, 1]."""

from __future__ import annotations

import torch
from torch import Tensor

from flatgen.classify.config import DataSpec
from flatgen.data import get_dataset

SUBSET_SEED = 0  # which images a subsample keeps, and the fixed sharpness batch: run-independent


def to_unit_box(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]: the box the attacks clamp to."""
    return ((x + 1) / 2).clamp(0, 1)


def _subset(x: Tensor, y: Tensor, n: int | None, salt: int) -> tuple[Tensor, Tensor]:
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED + salt))[:n]
    return x[idx], y[idx]


def load_classifier_data(spec: DataSpec) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test), images N x C x H x W in [0, 1]."""
    labelled = get_dataset(spec.name, labelled=True).labelled
    (xtr, ytr), (xte, yte) = labelled(spec, "train"), labelled(spec, "test")
    xtr, ytr = _subset(to_unit_box(xtr), ytr, spec.n_train, 0)
    xte, yte = _subset(to_unit_box(xte), yte, spec.n_test, 1)
    return xtr, ytr, xte, yte


def fixed_batch(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The same n training images for every model (sharpness is measured on them)."""
    return _subset(x, y, n, 2)
