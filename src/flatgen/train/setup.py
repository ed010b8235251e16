"""Everything a training run holds, built from the config, and restored from a checkpoint.

Every checkpoint file is read and checked (readable, fits the model, finite) before training
writes anything, so a refused resume leaves the run directory as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatgen.config import Config
from flatgen.diffusion import NoiseSchedule
from flatgen.errors import CheckpointError
from flatgen.train.checkpoint import check_finite, load_trainer_state, load_weights
from flatgen.train.method import Method
from flatgen.train.schedule import lr_lambda


@dataclass
class Trainer:
    """The model (as Accelerate prepared it, and unwrapped), its optimizer, LR schedule and
    weight averages, and what the steps draw from: the training data and noise schedule."""

    accelerator: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    method: Method
    schedule: NoiseSchedule
    train_x: torch.Tensor
    averages: dict[str, nn.Module] = field(default_factory=dict)
    raw_model: nn.Module | None = None  # the model outside Accelerate's wrappers


def build_trainer(cfg: Config, accelerator: Any, *, train_x: torch.Tensor,
                  schedule: NoiseSchedule, ckpt: Path | None) -> tuple[Trainer, int, list[float]]:
    """(trainer, start step, the last losses): fresh, or restored from `ckpt`, not yet prepared
    by Accelerate."""
    from flatgen.models import model_from_config

    model = model_from_config(cfg.model, tuple(train_x.shape[1:]))
    method = Method(cfg.method, cfg.train)
    optimizer = method.build_optimizer(model.parameters())
    base_optimizer = getattr(optimizer, "base_optimizer", optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        base_optimizer, lr_lambda(total=cfg.train.steps, warmup=cfg.train.warmup_steps,
                                  decay=cfg.train.lr_decay))
    trainer = Trainer(accelerator=accelerator, model=model, optimizer=optimizer,
                      scheduler=scheduler, method=method, schedule=schedule, train_x=train_x,
                      raw_model=model)
    if ckpt is None:
        trainer.averages = method.attach_averages(model)
        return trainer, 0, []
    step, losses = _restore(ckpt, trainer)
    return trainer, step, losses


def _restore(ckpt: Path, t: Trainer) -> tuple[int, list[float]]:
    """Load a checkpoint into the model, averages, optimizer, scheduler and RNG;
    (step, the last losses)."""
    weights = load_weights(ckpt, "model")
    check_finite(weights, ckpt / "model.safetensors")
    _load_into(t.model, weights, ckpt / "model.safetensors")
    t.averages = t.method.attach_averages(t.model)
    state = load_trainer_state(ckpt)
    average_weights = {name: load_weights(ckpt, name) for name in t.averages}
    for name, tensors in average_weights.items():
        check_finite(tensors, ckpt / f"{name}.safetensors")
    try:
        t.optimizer.load_state_dict(state["optimizer"])
        t.scheduler.load_state_dict(state["scheduler"])
        for name, avg in t.averages.items():
            avg.load_state_dict({**state["averages"][name], "module": average_weights[name]})
        if t.accelerator.scaler is not None and state.get("scaler"):
            t.accelerator.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        reason = _first_line(err)[:80]
        raise CheckpointError(
            f"the trainer state in {str(ckpt)!r} does not fit this run ({reason}): "
            "resume from another checkpoint with --resume-from") from None
    return int(state["step"]), list(state.get("recent_losses", []))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_into(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"{str(path)!r} does not fit the model of the run's config.yaml "
            "(another model.preset?): restore the run's own config.yaml") from None
