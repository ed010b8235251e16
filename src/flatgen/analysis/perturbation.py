"""Perturbation sharpness: the loss increase under worst-case and random weight perturbations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from flatgen.analysis.batched import Vectorize, losses_at
from flatgen.analysis.directions import BiasMode, random_direction
from flatgen.analysis.params import (
    LossFn,
    ParamSpace,
    ProgressFn,
    analysis_mode,
    functional_loss,
    report,
)


@dataclass
class PerturbationCurve:
    """Loss under perturbations of size radii[i]: losses[i] (worst case or mean).

    kind "worst": radius rho is an L2 ball in weight space, norms[i] is the size of the
    perturbation found. kind "average": radius sigma is the per-filter relative noise level,
    std[i] the spread over draws.
    """

    kind: str
    radii: list[float]
    loss0: float
    losses: list[float]
    std: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)

    @property
    def increase(self) -> list[float]:
        return [v - self.loss0 for v in self.losses]

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        key = "rho" if self.kind == "worst" else "sigma"
        out = {key: self.radii, "loss0": self.loss0, "loss": self.losses, "increase": self.increase}
        if self.std:
            out["std"] = self.std
        if self.norms:
            out["norm"] = self.norms
        return out


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    steps: int = 5,
    step_size: float = 0.5,
    progress: ProgressFn | None = None,
) -> PerturbationCurve:
    """max L(w + e) over ||e||_2 <= rho, approximated by normalized gradient ascent.

    The first step is the SAM step rho * g / ||g||; the next steps - 1 move by step_size * rho
    along the normalized gradient and project back onto the ball. The largest loss seen is
    reported, so the increase is a lower bound on the true worst case. The model is not
    modified.
    """
    space = ParamSpace(model)
    w = space.flat()
    losses, norms = [], []
    with analysis_mode(model):
        with torch.no_grad():
            loss0 = float(loss_fn(model))
        for r, rho in enumerate(rhos):
            if rho < 0:
                raise ValueError(f"rho must be >= 0, got {rho}")
            delta = torch.zeros_like(w)
            best, best_norm = loss0, 0.0
            for s in range(steps + 1):
                d = delta.clone().requires_grad_(s < steps)
                loss = functional_loss(model, loss_fn, space.to_dict(w + d))
                value = float(loss.detach())
                if s > 0 and value > best:
                    best, best_norm = value, float(delta.norm())
                if s == steps or rho == 0:
                    break
                (grad,) = torch.autograd.grad(loss, d)
                g_norm = grad.norm()
                if g_norm == 0:
                    break
                delta = delta + (rho if s == 0 else step_size * rho) * grad / g_norm
                delta = delta * torch.clamp(rho / (delta.norm() + 1e-30), max=1.0)
            losses.append(best)
            norms.append(best_norm)
            report(progress, r + 1, len(rhos))
    return PerturbationCurve("worst", [float(x) for x in rhos], loss0, losses, norms=norms)


def average_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    sigmas: Sequence[float] = (0.01, 0.05, 0.1),
    draws: int = 8,
    seed: int = 0,
    bias: BiasMode = "zero",
    batch_points: int = 8,
    vectorize: Vectorize = "auto",
    progress: ProgressFn | None = None,
) -> PerturbationCurve:
    """Mean and spread over `draws` of L(w + sigma * d), d Gaussian and filter-normalized.

    Each filter of d has the norm of the same filter of w, so sigma is the relative noise
    level filter by filter; 1-D parameters follow `bias` (zero by default). The same draws
    are used at every sigma (a smooth curve). The model is not modified.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.stack([random_direction(model, g, bias, space) for _ in range(draws)])
    sig = torch.as_tensor(list(sigmas), dtype=torch.float64)
    # point (i, j) = w + sigma_i * d_j
    coords = (sig[:, None, None] * torch.eye(draws, dtype=torch.float64)[None]).reshape(-1, draws)
    with analysis_mode(model):
        with torch.no_grad():
            loss0 = float(loss_fn(model))
        vals = losses_at(
            model,
            loss_fn,
            dirs,
            coords,
            space=space,
            batch_points=batch_points,
            vectorize=vectorize,
            progress=progress,
        ).reshape(len(sig), draws)
    std = vals.std(axis=1, ddof=1) if draws > 1 else np.zeros(len(sig))
    return PerturbationCurve(
        "average", [float(x) for x in sigmas], loss0, vals.mean(axis=1).tolist(), std=std.tolist()
    )
