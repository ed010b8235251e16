"""Adversarial attacks: a generic PGD / FGSM core, and its uses on denoisers, on the initial
noise of the DDIM sampler, and on classifiers; plus the "robust epsilon" of a sweep.

All norms are per sample over every axis but the first. Objectives map a batch to one value
per sample (shape (N,)) or to a scalar; the attack maximizes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.chain import ddim_generate
from flatgen.robustness.util import evaluating, make_generator

NORMS = ("linf", "l2")
Objective = Callable[[torch.Tensor], torch.Tensor]


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = _per_sample_norm(delta)
    # the 1e-6 margin keeps the rounded norm at or below eps
    return delta * torch.clamp(eps * (1 - 1e-6) / n.clamp_min(1e-30), max=1.0)


def _clamp(x: torch.Tensor, delta: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    if clamp is None:
        return delta
    return (x + delta).clamp(*clamp) - x


def _random_start(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    if norm == "linf":
        u = torch.rand(tuple(x.shape), generator=generator, dtype=torch.float64)
        return ((2 * u - 1) * eps).to(x.device, x.dtype)
    # uniform in the L2 ball: a uniform direction and radius eps * U^(1/d)
    d = x[0].numel()
    g = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float64)
    r = torch.rand(x.shape[0], generator=generator, dtype=torch.float64) ** (1.0 / d)
    g = g / _per_sample_norm(g) * (eps * r).view(-1, *([1] * (x.ndim - 1)))
    return g.to(x.device, x.dtype)


def _ascent(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / _per_sample_norm(g).clamp_min(1e-30)


def _values(objective: Objective, z: torch.Tensor) -> torch.Tensor:
    v = objective(z)
    if v.ndim > 1:
        raise ValueError(f"objective must return shape (N,) or a scalar, got {tuple(v.shape)}")
    return v


def pgd(
    objective: Objective,
    x: torch.Tensor,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on objective within the eps-ball (L-inf or L2) around x.

    Steps are sign-gradient (L-inf) or normalized-gradient (L2) of size step_size (default
    2.5 * eps / steps), each followed by projection onto the ball and the clamp box (x is
    assumed inside the box). Returns the best point per sample (per batch for a scalar
    objective) among x itself, the random start and the iterates. eps = 0 returns x unchanged.
    return_values=True also returns the objective at the returned point (no extra call).
    """
    _check_norm(norm)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x = x.detach()
    if eps == 0:
        if return_values:
            with torch.no_grad():
                return x.clone(), _values(objective, x).detach()
        return x.clone()
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    alpha = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    delta = _clamp(x, _project(delta, eps, norm), clamp)
    best_delta, best_val = torch.zeros_like(x), None

    def keep_best(val: torch.Tensor, d: torch.Tensor) -> None:
        nonlocal best_delta, best_val
        val = val.detach()
        if best_val is None:
            best_val, best_delta = val.clone(), d.detach().clone()
        elif val.ndim == 0:
            if val > best_val:
                best_val, best_delta = val.clone(), d.detach().clone()
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            mask = better.view(-1, *([1] * (x.ndim - 1)))
            best_delta = torch.where(mask, d.detach(), best_delta)

    with torch.no_grad():  # the clean input is a candidate: the attack never lowers the objective
        keep_best(_values(objective, x), best_delta)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            val = _values(objective, x + delta)
            (grad,) = torch.autograd.grad(val.sum(), delta)
        keep_best(val, delta)
        with torch.no_grad():
            delta = delta.detach() + alpha * _ascent(grad, norm)
            delta = _clamp(x, _project(delta, eps, norm), clamp)
    with torch.no_grad():
        keep_best(_values(objective, x + delta), delta)
    adv = (x + best_delta).detach()
    return (adv, best_val) if return_values else adv


def fgsm(
    objective: Objective,
    x: torch.Tensor,
    eps: float,
    norm: str = "linf",
    clamp: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One gradient step of size eps: sign of the gradient (L-inf) or its direction (L2)."""
    _check_norm(norm)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    z = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_values(objective, z).sum(), z)
    delta = _project(eps * _ascent(grad, norm), eps, norm)
    return (x + _clamp(x, delta, clamp)).detach()


# ---------------------------------------------------------------- robust epsilon


def robust_epsilon(
    eps: Sequence[float],
    values: Sequence[float],
    fraction: float | None = 0.5,
    threshold: float | None = None,
    higher_is_worse: bool = True,
) -> float | None:
    """Smallest eps at which the metric reaches its degradation threshold, linearly interpolated
    between the two sweep points that bracket the first crossing; None if never reached.

    The threshold is given, or (1 + fraction) x the clean value (higher_is_worse, e.g. a loss or
    W2) / (1 - fraction) x the clean value (e.g. accuracy); the clean value is the one at the
    smallest eps (normally eps = 0). Two models compare as the ratio of their robust epsilons.
    """
    if len(eps) != len(values) or not eps:
        raise ValueError("eps and values must be non-empty and of equal length")
    pts = sorted(zip(eps, values, strict=True))
    if threshold is None:
        if fraction is None:
            raise ValueError("give fraction or threshold")
        base = pts[0][1]
        threshold = base * (1 + fraction) if higher_is_worse else base * (1 - fraction)

    def bad(v: float) -> bool:
        return v >= threshold if higher_is_worse else v <= threshold

    if bad(pts[0][1]):
        return float(pts[0][0])
    for (e0, v0), (e1, v1) in zip(pts[:-1], pts[1:], strict=True):
        if bad(v1):
            return float(e0 + (threshold - v0) / (v1 - v0) * (e1 - e0))
    return None


# ---------------------------------------------------------------- eps sweeps


def _eps_sweep(
    n: int,
    batch_size: int,
    eps_list: Sequence[float],
    seed: int,
    label: tuple[object, ...],
    batch_total: Callable[[slice, float, torch.Generator], float],
    tick: Callable[[], None] | None = None,
) -> tuple[list[float], list[float]]:
    """The sweep loop the three attacks below share: (eps values, per-sample mean per eps).

    The eps values are eps_list sorted, with 0 (the clean value) always in. At each eps, one
    generator seeded from (seed, *label, index of eps) runs through the batches of batch_size
    samples in order; batch_total(batch slice, eps, generator) returns the batch's sum of the
    measured value, and the sums over all n samples are divided by n. tick() after each eps.
    """
    eps_all = sorted({0.0, *map(float, eps_list)})
    means = []
    for k, eps in enumerate(eps_all):
        gen = make_generator(seed, *label, k)
        total = 0.0
        for i in range(0, n, batch_size):
            total += batch_total(slice(i, i + batch_size), eps, gen)
        means.append(total / n)
        if tick:
            tick()
    return eps_all, means


# ---------------------------------------------------------------- denoiser input


def denoising_loss_per_sample(
    model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of the predicted noise, one value per sample."""
    return (model(x_t, t) - noise).pow(2).flatten(1).mean(1)


def attack_denoiser_input(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: int,
    eps_list: Sequence[float],
    norm: str = "linf",
    steps: int = 10,
    step_factor: float = 2.5,
    random_start: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    fraction: float = 0.5,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """PGD on the denoiser input x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at timestep t,
    maximizing the denoising loss against the original noise; mean loss per eps.

    eps = 0 is always evaluated (the clean loss). robust_epsilon: where the loss has risen by
    `fraction` over the clean loss.
    """
    _check_norm(norm)
    g = make_generator(seed, "denoiser-noise", t)
    noise = torch.randn(tuple(x0.shape), generator=g).to(x0.device, x0.dtype)
    tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
    x_t = schedule.add_noise(x0, noise, tt)

    def batch_loss(sl: slice, eps: float, gen: torch.Generator) -> float:
        def objective(z: torch.Tensor) -> torch.Tensor:
            return denoising_loss_per_sample(model, z, tt[sl], noise[sl])

        alpha = step_factor * eps / max(steps, 1)
        _, val = pgd(objective, x_t[sl], eps, norm, steps, alpha, random_start, None, gen, True)
        return val.sum().item()

    with evaluating(model, freeze=True):
        eps_all, losses = _eps_sweep(
            x0.shape[0], batch_size, eps_list, seed, ("denoiser-pgd", t, norm), batch_loss, tick
        )
    return {
        "t": t,
        "norm": norm,
        "eps": eps_all,
        "loss": losses,
        "relative_increase": [v / losses[0] - 1 for v in losses],
        "robust_epsilon": robust_epsilon(eps_all, losses, fraction),
        "fraction": fraction,
    }


# ---------------------------------------------------------------- initial noise


def attack_initial_noise(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    eps_list: Sequence[float],
    norm: str = "linf",
    sampling_steps: int = 5,
    steps: int = 10,
    step_factor: float = 2.5,
    random_start: bool = True,
    clip: bool | None = None,
    seed: int = 0,
    fraction: float = 0.5,
    batch_size: int = 256,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """PGD on the initial noise x_T of the deterministic DDIM sampler (sampling_steps network
    calls, differentiated through), maximizing the squared deviation of the generated sample
    from the clean one.

    Reports per eps the RMS deviation (root mean square over pixels, mean over samples) and
    that deviation divided by the RMS distance between two different clean samples ("spread"),
    so 1 means "as far as an unrelated sample". robust_epsilon: where the normalized deviation
    reaches `fraction`.
    """
    _check_norm(norm)
    x_T = x_T.detach()
    chunks = [slice(i, i + batch_size) for i in range(0, x_T.shape[0], batch_size)]

    def batch_deviation(c: slice, eps: float, gen: torch.Generator) -> float:
        def objective(z: torch.Tensor) -> torch.Tensor:
            out = ddim_generate(model, schedule, z, sampling_steps, clip)
            return (out - clean[c]).pow(2).flatten(1).mean(1)

        alpha = step_factor * eps / max(steps, 1)
        _, val = pgd(objective, x_T[c], eps, norm, steps, alpha, random_start, None, gen, True)
        return val.clamp_min(0).sqrt().sum().item()  # val: mean squared deviation

    with evaluating(model, freeze=True):
        with torch.no_grad():
            clean = torch.cat(
                [ddim_generate(model, schedule, x_T[c], sampling_steps, clip) for c in chunks]
            )
        spread = (clean - clean.roll(1, 0)).pow(2).flatten(1).mean(1).sqrt().mean().item()
        # the sweep's batches are these chunks: both split x_T every batch_size samples
        eps_all, deviations = _eps_sweep(
            x_T.shape[0], batch_size, eps_list, seed, ("xT-pgd", norm), batch_deviation, tick
        )
    normalized = [d / spread if spread > 0 else 0.0 for d in deviations]
    return {
        "norm": norm,
        "sampling_steps": sampling_steps,
        "eps": eps_all,
        "deviation": deviations,
        "spread": spread,
        "normalized_deviation": normalized,
        "robust_epsilon": robust_epsilon(eps_all, normalized, threshold=fraction),
        "fraction": fraction,
    }


# ---------------------------------------------------------------- classifiers


def classifier_robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    seed: int = 0,
    fraction: float = 0.5,
) -> dict[str, Any]:
    """Accuracy of a classifier (logits = model(x)) under FGSM or PGD on its inputs, per eps.

    Inputs are expected in the clamp box ([0, 1] by default). step_size defaults to
    2.5 * eps / steps. robust_epsilon: where accuracy has fallen by `fraction` of the clean one.
    """
    _check_norm(norm)
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}")

    def batch_correct(sl: slice, eps: float, gen: torch.Generator) -> float:
        xb, yb = x[sl], y[sl]

        def objective(z: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(z), yb, reduction="none")

        if attack == "fgsm":
            adv = fgsm(objective, xb, eps, norm, clamp)
        else:
            adv = pgd(objective, xb, eps, norm, steps, step_size, random_start, clamp, gen)
        with torch.no_grad():
            return (model(adv).argmax(1) == yb).sum().item()

    with evaluating(model, freeze=True):
        eps_all, acc = _eps_sweep(
            x.shape[0], batch_size, eps_list, seed, ("classifier", attack, norm), batch_correct
        )
    return {
        "attack": attack,
        "norm": norm,
        "eps": eps_all,
        "accuracy": acc,
        "clean_accuracy": acc[0],
        "robust_epsilon": robust_epsilon(eps_all, acc, fraction, higher_is_worse=False),
        "fraction": fraction,
    }
