"""What an analysis command opens: a flatgen run, or a diffusers pipeline / UNet directory.

A diffusers directory is read-only to flatgen: it is analysed with the data named by `--data`
and every output goes to the directory named by `--out`.

From Python, `flatgen.open_model(path)` (this module is callable: it calls `load`) opens either
kind without an output folder, since the Python API writes nothing; data are optional there.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flatgen.config import Config, build_config
from flatgen.data import get_dataset, load_dataset, named_datasets, recognize_path
from flatgen.diffusion import NoiseSchedule
from flatgen.models import model_from_config
from flatgen.models.pretrained import is_diffusers_dir, sample_shape, scheduler_config
from flatgen.train.run import Run, load_run


def data_section(data: str, image_shape: tuple[int, int, int]) -> dict:
    """The `data` config section for `--data NAME|PATH`: a registered dataset that needs no
    path (digits), or a local folder a registered dataset recognizes (CIFAR-10 binary, image
    folder: resized to the model's image size and channels)."""
    if data in named_datasets():
        return {"name": data}
    name = recognize_path(data)
    if name is None:
        raise ValueError(f"--data {data!r}: give {', '.join(named_datasets())}, or the path of a "
                         "CIFAR-10 binary folder or of an image folder")
    channels, size, _ = image_shape
    fits = {"path": str(Path(data)), "image_size": size, "channels": channels}
    return {"name": name, **{k: v for k, v in fits.items() if k in get_dataset(name).options}}


@dataclass
class PretrainedRun(Run):
    """A diffusers model seen as a run with only raw weights; its data come from --data."""

    has_data: bool = True

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_data:
            raise ValueError(f"{str(self.path)!r} was opened without data: open it with "
                             "open_model(path, data='digits'|PATH), or pass data to the analysis")
        return super().data()

    def available_weights(self) -> list[str]:
        return ["raw"]

    def model(self, weights: str = "raw", device: str | torch.device = "cpu") -> nn.Module:
        self.check_weights(weights)
        return model_from_config(self.cfg.model, self.sample_shape()).to(device).eval()

    def sample_shape(self) -> tuple[int, ...]:
        return sample_shape(self.path)


def pretrained_config(path: str | Path, data: str) -> Config:
    """The config that describes analysing (or fine-tuning) a diffusers directory on `data`."""
    section = data_section(data, sample_shape(path))
    return build_config({"data": section, "model": {"pretrained": str(path)}})


def open_model(path: str | Path, *, data: str | None = None, out: Path | None = None,
               needs_data: bool = True) -> Run:
    """A flatgen run, or a diffusers directory (then `out` is required, and `data` unless
    needs_data is False: sampling needs only the model's shape)."""
    path = Path(path)
    if (path / "config.yaml").is_file() or not is_diffusers_dir(path):
        if data is not None:
            raise ValueError(f"--data is for diffusers directories; the run {str(path)!r} "
                             "uses the data it was trained on")
        return load_run(path)
    if data is None and needs_data:
        raise ValueError(f"{str(path)!r} is a diffusers directory: name the data with "
                         "--data digits|PATH (and the output folder with --out)")
    if out is None:
        raise ValueError(f"{str(path)!r} is a diffusers directory, which flatgen never writes "
                         "into: name an output folder with --out")
    if out.resolve() == path.resolve() or path.resolve() in out.resolve().parents:
        raise ValueError(f"--out {str(out)!r} is inside the model directory: choose another")
    return _pretrained_run(path, data)


def _pretrained_run(path: Path, data: str | None) -> PretrainedRun:
    cfg = pretrained_config(path, data or "digits")  # without data: a placeholder, never read
    # the pipeline's own scheduler: its chain (spacing, offset, DDIM's final alpha) is sampled
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config(path))
    run = PretrainedRun(path=path, cfg=cfg, schedule=schedule, ckpt=path, has_data=data is not None)
    if data is None:
        return run
    train, _ = load_dataset(cfg.data)
    if tuple(train.shape[1:]) != run.sample_shape():
        raise ValueError(f"--data {data!r} has images of shape {tuple(train.shape[1:])}; the model "
                         f"denoises {run.sample_shape()}")
    return run


def load(path: str | Path, *, data: str | None = None) -> Run:
    """A flatgen run or a diffusers pipeline / UNet directory, for Python use (what
    `flatgen.open_model(path)` calls): run.model(), run.schedule, run.sample_shape(), and
    run.data() where the run has data (a diffusers directory has them when `data` is named)."""
    path = Path(path)
    if (path / "config.yaml").is_file() or not is_diffusers_dir(path):
        return open_model(path, data=data)
    return _pretrained_run(path, data)


class _CallableModule(types.ModuleType):
    # `import flatgen.open_model` binds this module to the name flatgen.open_model, so the
    # documented call `flatgen.open_model(path)` works only if the module itself is callable
    def __call__(self, path: str | Path, *, data: str | None = None) -> Run:
        return load(path, data=data)


sys.modules[__name__].__class__ = _CallableModule


__all__ = ["PretrainedRun", "data_section", "load", "open_model", "pretrained_config"]
