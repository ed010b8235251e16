"""Reading a finished (or interrupted) run directory back: config, schedule, model weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flatgen.config import Config, load_config
from flatgen.data import load_dataset
from flatgen.diffusion import NoiseSchedule, schedule_from_config
from flatgen.errors import CheckpointError
from flatgen.models import model_from_config
from flatgen.train.checkpoint import check_finite, latest_checkpoint, load_weights

WEIGHTS_CHOICES = ("raw", "ema", "swa")
_FILE_FOR = {"raw": "model", "ema": "ema", "swa": "swa"}


class RunNotFoundError(FileNotFoundError):
    """The path is not a flatgen run directory with a checkpoint."""


@dataclass
class Run:
    """A trained run: its resolved config, noise schedule and checkpoint folder."""

    path: Path
    cfg: Config
    schedule: NoiseSchedule
    ckpt: Path

    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data()[1].shape[1:])

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) tensors of the run's dataset."""
        return load_dataset(self.cfg.data)

    def available_weights(self) -> list[str]:
        return [w for w in WEIGHTS_CHOICES if (self.ckpt / f"{_FILE_FOR[w]}.safetensors").is_file()]

    def check_weights(self, weights: str) -> None:
        """Raise ValueError unless this run has `weights` (raw, ema or swa)."""
        if weights not in WEIGHTS_CHOICES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS_CHOICES)}, "
                             f"got {weights!r}")
        if weights not in self.available_weights():
            raise ValueError(
                f"run {str(self.path)!r} has no {weights!r} weights "
                f"(trained with method {self.cfg.method.name!r}; "
                f"available: {', '.join(self.available_weights())})"
            )

    def model(self, weights: str = "raw", device: str | torch.device = "cpu") -> nn.Module:
        """The denoiser with raw, EMA or SWA weights, in eval mode.

        CheckpointError (one line) if the file is unreadable, does not fit the model of the
        run's config, or holds non-finite weights (a diverged run).
        """
        self.check_weights(weights)
        model = model_from_config(self.cfg.model, self.sample_shape())
        path = self.ckpt / f"{_FILE_FOR[weights]}.safetensors"
        tensors = load_weights(self.ckpt, _FILE_FOR[weights])
        check_finite(tensors, path)
        try:
            model.load_state_dict(tensors)
        except RuntimeError:
            raise CheckpointError(
                f"{str(path)!r} does not fit the model of {str(self.path / 'config.yaml')!r} "
                f"(model.preset {self.cfg.model.preset!r}): was config.yaml edited? "
                "restore the run's own") from None
        return model.to(device).eval()


def load_run(path: str | Path) -> Run:
    """Open a run directory written by `flatgen train`."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise RunNotFoundError(f"{str(path)!r} is not a flatgen run directory (no config.yaml)")
    ckpt = latest_checkpoint(path / "checkpoints")
    if ckpt is None:
        raise RunNotFoundError(f"run {str(path)!r} has no checkpoint yet")
    cfg = load_config(path / "config.yaml", fix="restore the run's own config.yaml")
    return Run(path=path, cfg=cfg, schedule=schedule_from_config(cfg.diffusion), ckpt=ckpt)
