"""Train a classifier with one method, through flatgen's SAM-aware train_step (Accelerate)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from flatgen.classify.config import DistillationMethod, TrainSpec, _Method
from flatgen.classify.methods import Recipe, distillation_recipes, recipe
from flatgen.classify.models import apply_spectral_norm
from flatgen.train.schedule import lr_lambda, make_accelerator
from flatgen.train.step import train_step, unwrap_optimizer

# tick(phase, done, total): called after every optimizer step
Tick = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    """The trained model (trained in place), its loss per step, and the distillation teacher."""

    model: nn.Module
    losses: list[float]
    seconds: float
    teacher: nn.Module | None = None
    teacher_losses: list[float] = field(default_factory=list)


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    rec: Recipe,
    train: TrainSpec,
    steps: int,
    seed: int,
    accelerator: Accelerator,
    tick: Callable[[int, int], None] | None = None,
) -> list[float]:
    """`steps` optimizer steps of `rec` on (x, y): shuffled epochs of train.batch_size images."""
    torch.manual_seed(seed)  # dropout masks
    g = torch.Generator().manual_seed(seed)  # batch order and attack random starts
    optimizer = rec.optimizer(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    groups = unwrap_optimizer(optimizer).param_groups  # the SAM family shares its base's groups
    base_lr = [grp["lr"] for grp in groups]
    factor = lr_lambda(total=steps, warmup=train.warmup_steps, decay=train.lr_decay)
    x, y = x.to(accelerator.device), y.to(accelerator.device)
    bs = min(train.batch_size, len(x))
    order, pos, losses = torch.randperm(len(x), generator=g), 0, []
    model.train()
    for step in range(steps):
        if pos + bs > len(x):
            order, pos = torch.randperm(len(x), generator=g), 0
        idx = order[pos : pos + bs].to(accelerator.device)
        pos += bs
        for grp, lr in zip(groups, base_lr, strict=True):
            grp["lr"] = lr * factor(step)
        batch = rec.prepare(model, x[idx], y[idx], generator=g)
        res = train_step(model, optimizer, [batch], loss_fn=rec.loss, accelerator=accelerator,
                         grad_clip=train.grad_clip)
        losses.append(res.loss)
        if not math.isfinite(res.loss):
            raise FloatingPointError(f"training loss is {res.loss} at step {step}")
        if tick is not None:
            tick(step + 1, steps)
    model.eval()
    return losses


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    method: _Method,
    train: TrainSpec,
    seed: int = 0,
    tick: Tick | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train `model` (any module mapping inputs in [0, 1] to logits) on (x, y) with `method`.

    The optimizer, weight decay, spectral norm (applied here, in place) and the batch recipe
    (PGD / WRM examples, distillation's teacher and soft labels) come from the method; dropout
    is part of the model (build_classifier(dropout=...)). Distillation trains a teacher (a copy
    of the untrained model) first, then `model` as the student.
    """
    t0 = time.perf_counter()
    accelerator = accelerator or make_accelerator(cpu=train.cpu)
    if method.spectral_norm:
        apply_spectral_norm(model)

    def phase(name: str) -> Callable[[int, int], None] | None:
        return None if tick is None else (lambda done, total: tick(name, done, total))

    if isinstance(method, DistillationMethod):
        teacher = copy.deepcopy(model)
        teach, student = distillation_recipes(
            method, train.lr, temperature=method.temperature, teacher=teacher
        )
        common = dict(train=train, accelerator=accelerator)
        t_steps = method.teacher_steps or train.steps
        t_losses = fit(
            teacher, x, y, rec=teach, steps=t_steps, seed=seed, tick=phase("teacher"), **common
        )
        losses = fit(
            model,
            x,
            y,
            rec=student,
            steps=train.steps,
            seed=seed + 1,
            tick=phase("student"),
            **common,
        )
        return TrainResult(model, losses, time.perf_counter() - t0, teacher, t_losses)
    losses = fit(
        model,
        x,
        y,
        rec=recipe(method, train.lr),
        train=train,
        steps=train.steps,
        seed=seed,
        accelerator=accelerator,
        tick=phase("train"),
    )
    return TrainResult(model, losses, time.perf_counter() - t0)
