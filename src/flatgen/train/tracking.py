"""Watching a training run: Accelerate's trackers (TensorBoard, W&B), sample grids every N steps,
and the loss curve written into the run directory at the end.

Everything here runs on the main process only and never changes what is trained: sample grids
use their own generator, and the model is put back in train mode afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

TRACKERS = ("none", "tensorboard", "wandb")
SAMPLE_SEED = 0
SAMPLE_GRID = 16
SAMPLE_STEPS = 20
LOSS_CURVE = "loss_curve.png"


def tracker_for(log_with: str | None) -> str | None:
    """The Accelerate tracker name for train.log_with, or None; one-line error if not installed."""
    if log_with in (None, "none"):
        return None
    if log_with not in TRACKERS:
        raise ValueError(f"train.log_with must be one of {', '.join(TRACKERS)}, got {log_with!r}")
    module = {"tensorboard": "tensorboard", "wandb": "wandb"}[log_with]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"train.log_with {log_with} needs the {module} package: pip install "
                         f"{module} (or set train.log_with none)")
    return log_with


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:  # trackers take scalars and strings as hyperparameters
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class Tracking:
    """The trackers and sample grids of one run (a no-op where nothing is asked for)."""

    def __init__(self, accelerator: Any, cfg: Any, run_dir: Path):
        self.accelerator, self.cfg, self.run_dir = accelerator, cfg, Path(run_dir)
        self.tracker = tracker_for(cfg.train.log_with)
        self.main = accelerator.is_main_process
        if self.tracker is not None:
            accelerator.init_trackers(self.run_dir.name, config=_flat(cfg.model_dump(mode="json")),
                                      init_kwargs=self._init_kwargs())

    def _init_kwargs(self) -> dict[str, Any]:
        # W&B writes to ./wandb of the working directory unless told: the run's logs/ folder
        # (where TensorBoard writes too), unless the user chose one with WANDB_DIR
        if self.tracker != "wandb" or os.environ.get("WANDB_DIR"):
            return {}
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return {"wandb": {"dir": str(logs)}}

    def log(self, record: dict[str, Any]) -> None:
        if self.tracker is None:
            return
        scalars = {k: float(v) for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.accelerator.log(scalars, step=int(record["step"]))

    def after_step(self, model: nn.Module, *, schedule: Any, step: int,
                   sample_shape: tuple[int, ...]) -> None:
        every = self.cfg.train.sample_every
        if not every or step % every or not self.main:
            return
        from flatgen.diffusion import generate
        from flatgen.plotting import save_samples_png

        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x = generate(model, schedule, n=SAMPLE_GRID, shape=sample_shape, steps=SAMPLE_STEPS,
                         sampler="adm",
                         seed=SAMPLE_SEED)
        model.train(was_training)
        save_samples_png(x, self.run_dir / "samples" / f"step-{step}.png")
        if self.tracker == "tensorboard" and x.ndim == 4:
            tb = self.accelerator.get_tracker("tensorboard", unwrap=True)
            tb.add_images("samples", (x / 2 + 0.5).clamp(0, 1), global_step=step)

    def finish(self) -> None:
        if self.tracker is not None:
            self.accelerator.end_training()
        if self.main:
            plot_loss_curve(self.run_dir)


def plot_loss_curve(run_dir: str | Path) -> Path | None:
    """run_dir/loss_curve.png from metrics.jsonl (None when nothing was logged)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    from flatgen.plotting import new_figure, save_figure

    fig = new_figure((5, 3.2))
    ax = fig.subplots()
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows],
            marker="." if len(rows) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(f"{run_dir.name}: training loss")
    return save_figure(fig, run_dir / LOSS_CURVE, dpi=100)
