"""Perturbation sharpness: the loss increase under worst-case and random weight perturbations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from flatgen.analysis.batched import Vectorize, losses_at
from flatgen.analysis.directions import BiasMode, Filters, random_direction
from flatgen.analysis.params import (
    LossFn,
    ParamSpace,
    ProgressFn,
    analysis_mode,
    functional_loss,
    report,
)

# ascent labels, stored with every worst-case curve
SAM_ASCENT = "sam-ascent"  # SAM's own objective: normalized-gradient ascent in an L2 ball
PGD_FILTER = "pgd-filter"  # projected gradient ascent, random start, filter-normalized ball
ASCENTS: tuple[str, ...] = (PGD_FILTER, SAM_ASCENT)


@dataclass
class PerturbationCurve:
    """Loss under perturbations of size radii[i]: losses[i] (worst case or mean).

    kind "worst": radius rho bounds the perturbation, norms[i] is the L2 size of the one found;
    `ascent` says how it was searched (SAM_ASCENT: an L2 ball of radius rho, SAM's own
    objective; PGD_FILTER: every filter within rho times its weight's norm, filter_ratio[i]
    the largest ||delta_f|| / ||w_f|| found). kind "average": radius sigma is the per-filter
    relative noise level, std[i] the spread over draws.
    """

    kind: str
    radii: list[float]
    loss0: float
    losses: list[float]
    std: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    ascent: str = ""
    settings: dict = field(default_factory=dict)
    filter_ratio: list[float] = field(default_factory=list)
    # the PGD_FILTER ascents themselves (their delta tensors), one per radius: not in to_dict
    # (not JSON); the expansion check reuses them instead of rerunning the same ascents
    ascents: list[Ascent] = field(default_factory=list, repr=False, compare=False)

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
        if self.ascent:
            out["ascent"] = self.ascent
            out["ball"] = "filter" if self.ascent == PGD_FILTER else "l2"
        if self.filter_ratio:
            out["filter_ratio"] = self.filter_ratio
        if self.settings:
            out["settings"] = dict(self.settings)
        return out


def _check_rho(rho: float) -> None:
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    *,
    steps: int = 5,
    step_size: float = 0.5,
    progress: ProgressFn | None = None,
) -> PerturbationCurve:
    """SAM's own objective: max L(w + e) over ||e||_2 <= rho by normalized gradient ascent.

    The first step is SAM's step rho * g / ||g||, so a model trained with SAM has optimized
    this very quantity: it is no independent flatness evidence (see
    filter_worst_case_sharpness). The next steps - 1 move by step_size * rho along the
    normalized gradient and project back onto the ball. The largest loss seen is reported, so
    the increase is a lower bound on the true worst case. Labelled ascent="sam-ascent". The
    model is not modified.
    """
    space = ParamSpace(model)
    w = space.flat()
    losses, norms = [], []
    with analysis_mode(model):
        with torch.no_grad():
            loss0 = float(loss_fn(model))
        for r, rho in enumerate(rhos):
            _check_rho(rho)
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
    settings = {"steps": steps, "step_size": step_size}
    return PerturbationCurve(
        "worst", [float(x) for x in rhos], loss0, losses, norms=norms, ascent=SAM_ASCENT,
        settings=settings,
    )  # fmt: skip


@dataclass
class Ascent:
    """The worst case found in one filter-normalized ball: its loss and perturbation (flat)."""

    rho: float
    loss0: float
    loss: float
    delta: torch.Tensor
    filter_ratio: float  # max over filters of ||delta_f|| / ||w_f|| (<= rho)
    settings: dict = field(default_factory=dict)  # the ascent's arguments (seed included)


def filter_pgd_ascent(
    model: nn.Module,
    loss_fn: LossFn,
    rho: float,
    *,
    steps: int = 10,
    step_size: float = 1.0,
    restarts: int = 1,
    seed: int = 0,
    bias: BiasMode = "zero",
) -> Ascent:
    """max L(w + delta) over ||delta_f||_2 <= rho * ||w_f||_2 for every filter f (Li et al.'s
    filters; Keskar et al.'s sharpness is relative to |w| likewise), by projected gradient ascent.

    Each restart starts at a random point of the ball (a Gaussian direction, filter-normalized,
    each filter scaled by rho * U(0, 1)), then takes `steps` steps of one forward and backward
    pass each: every filter moves by alpha * rho * ||w_f|| along its own normalized gradient
    (the steepest ascent of the linearized loss in this ball) and is projected back. A step
    that does not raise the loss is refused and alpha halved (alpha starts at step_size), so
    the ascent is monotone, as in Auto-PGD. The best restart is kept: a lower bound on the
    true worst case. 1-D parameters follow `bias` ("zero": not perturbed). The model is not
    modified.
    """
    _check_rho(rho)
    if steps < 0 or restarts < 1 or step_size <= 0:
        raise ValueError(
            f"need steps >= 0, restarts >= 1, step_size > 0; got {steps}, {restarts}, {step_size}"
        )
    space = ParamSpace(model)
    filters = Filters(space, bias)
    w = space.flat()
    gen = torch.Generator().manual_seed(seed)

    def at(delta: torch.Tensor) -> tuple[float, torch.Tensor]:
        d = delta.clone().requires_grad_(True)
        loss = functional_loss(model, loss_fn, space.to_dict(w + d))
        (grad,) = torch.autograd.grad(loss, d)
        return float(loss.detach()), grad

    with analysis_mode(model):
        with torch.no_grad():
            loss0 = float(loss_fn(model))
        best, best_delta = loss0, torch.zeros_like(w)
        for _ in range(restarts if rho > 0 else 0):
            noise = torch.randn(space.n, generator=gen, dtype=torch.float64).to(w)
            frac = torch.rand(filters.n_filters, generator=gen, dtype=torch.float64).to(w)
            delta = filters.normalize(noise) * filters.expand(rho * frac)
            value, grad = at(delta)
            alpha = step_size
            for _ in range(steps):
                cand = filters.project(delta + filters.normalize(grad, alpha * rho), rho)
                cand_value, cand_grad = at(cand)
                if cand_value > value:
                    delta, value, grad = cand, cand_value, cand_grad
                    alpha = min(2 * alpha, step_size)
                else:  # overshot: stay, and try half the step
                    alpha /= 2
            if value > best:
                best, best_delta = value, delta
    settings = {"steps": steps, "step_size": step_size, "restarts": restarts, "seed": seed,
                "bias": bias}  # fmt: skip
    ratio = float(filters.ratios(best_delta).max())
    return Ascent(rho, loss0, best, best_delta.detach(), ratio, settings)


def filter_worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    *,
    steps: int = 10,
    step_size: float = 1.0,
    restarts: int = 1,
    seed: int = 0,
    bias: BiasMode = "zero",
    progress: ProgressFn | None = None,
) -> PerturbationCurve:
    """The worst-case loss curve in filter-normalized balls (see filter_pgd_ascent): rho is the
    relative size of every filter's perturbation, as sigma is for average_case_sharpness.

    An ascent SAM does not run (multi-step, random start, a per-filter ball instead of SAM's
    global L2 ball), so a lower value for SAM is evidence, not its training objective.
    Labelled ascent="pgd-filter". Every rho uses the same random starts (a smooth curve).
    """
    losses, norms, ratios, ascents, loss0 = [], [], [], [], float("nan")
    for r, rho in enumerate(rhos):
        a = filter_pgd_ascent(
            model, loss_fn, rho, steps=steps, step_size=step_size, restarts=restarts,
            seed=seed, bias=bias,
        )  # fmt: skip
        loss0 = a.loss0
        losses.append(a.loss)
        norms.append(float(a.delta.norm()))
        ratios.append(a.filter_ratio)
        ascents.append(a)
        report(progress, r + 1, len(rhos))
    if not rhos:
        with analysis_mode(model), torch.no_grad():
            loss0 = float(loss_fn(model))
    settings = {
        "steps": steps,
        "step_size": step_size,
        "restarts": restarts,
        "seed": seed,
        "bias": bias,
    }
    return PerturbationCurve(
        "worst", [float(x) for x in rhos], loss0, losses, norms=norms, ascent=PGD_FILTER,
        settings=settings, filter_ratio=ratios, ascents=ascents,
    )  # fmt: skip


def average_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    sigmas: Sequence[float] = (0.01, 0.05, 0.1),
    *,
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
    are used at every sigma (a smooth curve). The model is not modified. vectorize="auto"
    evaluates point by point on a CPU without timing a vmap trial (vmap over a conv net's
    stacked weights loses there: issue 22's profile), and times the trial elsewhere.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    space = ParamSpace(model)
    if vectorize == "auto" and space.device.type == "cpu":
        vectorize = False
    g = torch.Generator().manual_seed(seed)
    dirs = torch.stack([random_direction(model, g, bias=bias, space=space) for _ in range(draws)])
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
            coords=coords,
            space=space,
            batch_points=batch_points,
            vectorize=vectorize,
            progress=progress,
        ).reshape(len(sig), draws)
    std = vals.std(axis=1, ddof=1) if draws > 1 else np.zeros(len(sig))
    return PerturbationCurve(
        "average", [float(x) for x in sigmas], loss0, vals.mean(axis=1).tolist(), std=std.tolist()
    )
