"""The attack core shared by denoisers and classifiers: PGD (with random restarts) and FGSM in an
L-inf or L2 ball.

All norms are per sample over every axis but the first. Objectives map a batch to one value
per sample (shape (N,)) or to a scalar; the attack maximizes them. The radius eps (and the step
size) may be one number or one per row (a tensor of shape (N,)): a batch then holds several
attack strengths at once, each row the same algorithm as alone (batched ladders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

NORMS = ("linf", "l2")
Objective = Callable[[torch.Tensor], torch.Tensor]
Radius = float | torch.Tensor  # one radius, or one per row


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def _check_eps(eps: Radius) -> None:
    if bool(torch.as_tensor(eps).lt(0).any()):
        raise ValueError(f"eps must be >= 0, got {eps}")


def _rows(eps: Radius, x: torch.Tensor) -> Radius:
    """eps shaped to broadcast against x: a number stays one, a per-row tensor gets x's
    trailing axes (float64 until the arithmetic, so a row equals its scalar run to rounding)."""
    if not isinstance(eps, torch.Tensor):
        return eps
    if eps.shape != (x.shape[0],):
        raise ValueError(f"per-row eps needs shape ({x.shape[0]},), got {tuple(eps.shape)}")
    return eps.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))


def per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each sample, shaped to broadcast against v."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def _project(delta: torch.Tensor, eps: Radius, norm: str) -> torch.Tensor:
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            return torch.maximum(torch.minimum(delta, eps), -eps)
        return delta.clamp(-eps, eps)
    n = per_sample_norm(delta)
    # the 1e-6 margin keeps the rounded norm at or below eps
    return delta * torch.clamp(eps * (1 - 1e-6) / n.clamp_min(1e-30), max=1.0)


def _clamp(x: torch.Tensor, delta: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    if clamp is None:
        return delta
    return (x + delta).clamp(*clamp) - x


def random_start(
    x: torch.Tensor, eps: float, norm: str, *, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform random point of the eps-ball around 0, shaped like x (drawn on the CPU in
    float64 from `generator`): what pgd starts a random restart from."""
    if norm == "linf":
        u = torch.rand(tuple(x.shape), generator=generator, dtype=torch.float64)
        return ((2 * u - 1) * eps).to(x.device, x.dtype)
    # uniform in the L2 ball: a uniform direction and radius eps * U^(1/d)
    d = x[0].numel()
    g = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float64)
    r = torch.rand(x.shape[0], generator=generator, dtype=torch.float64) ** (1.0 / d)
    g = g / per_sample_norm(g) * (eps * r).view(-1, *([1] * (x.ndim - 1)))
    return g.to(x.device, x.dtype)


def _ascent(g: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return g.sign()
    return g / per_sample_norm(g).clamp_min(1e-30)


def _values(objective: Objective, z: torch.Tensor) -> torch.Tensor:
    v = objective(z)
    if v.ndim > 1:
        raise ValueError(f"objective must return shape (N,) or a scalar, got {tuple(v.shape)}")
    return v


class _Best:
    """The best point per sample (per batch for a scalar objective) seen so far."""

    def __init__(self, x: torch.Tensor):
        self.x, self.delta, self.value = x, torch.zeros_like(x), None

    def offer(self, value: torch.Tensor, delta: torch.Tensor) -> None:
        value, delta = value.detach(), delta.detach()
        if self.value is None:
            self.value, self.delta = value.clone(), delta.clone()
        elif value.ndim == 0:
            if value > self.value:
                self.value, self.delta = value.clone(), delta.clone()
        else:
            better = value > self.value
            self.value = torch.where(better, value, self.value)
            mask = better.view(-1, *([1] * (self.x.ndim - 1)))
            self.delta = torch.where(mask, delta, self.delta)


def pgd(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: Radius,
    norm: str = "linf",
    steps: int = 10,
    step_size: Radius | None = None,
    random_start: bool = True,
    restarts: int = 1,
    zero_first: bool = False,
    clamp: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    starts: Sequence[torch.Tensor] | None = None,
    return_values: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent on objective within the eps-ball (L-inf or L2) around x.

    Steps are sign-gradient (L-inf) or normalized-gradient (L2) of size step_size (default
    2.5 * eps / steps), each followed by projection onto the ball and the clamp box (x is
    assumed inside the box). `restarts` runs from independent random starts (drawn in turn from
    `generator`); zero_first=True starts the first run at x itself instead, whose first step
    follows the gradient at the clean input (random starts on the sphere of a high-dimensional
    ball turn slowly towards the best direction). Returns the best point per sample (per batch
    for a scalar objective) among x itself, the starts and all iterates of all restarts.
    eps = 0 returns x unchanged.
    eps and step_size may be tensors of shape (N,): one radius (step) per row. starts, when
    given, are the random starts (one tensor like x per random restart, in order) instead of
    draws from `generator`: a caller that batches several attacks draws each one's own.
    return_values=True also returns the objective at the returned point (no extra call).
    """
    check_norm(norm)
    _check_eps(eps)
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    x = x.detach()
    best = _Best(x)
    with torch.no_grad():  # the clean input is a candidate: the attack never lowers the objective
        best.offer(_values(objective, x), best.delta)
    if bool(torch.as_tensor(eps).gt(0).any()):
        alpha = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
        radius, alpha = _rows(eps, x), _rows(alpha, x)
        given = iter(starts) if starts is not None else None
        for k in range(restarts):
            start = None
            if random_start and not (zero_first and k == 0):
                start = (next(given, None) if given is not None
                         else random_start_delta(x, eps, norm, generator=generator))
                if start is None:
                    raise ValueError("starts holds fewer tensors than the random restarts")
            _ascend(objective, x, best, radius, norm, steps, alpha, start, clamp)
    adv = (x + best.delta).detach()
    assert best.value is not None
    return (adv, best.value) if return_values else adv


def random_start_delta(
    x: torch.Tensor, eps: Radius, norm: str, *, generator: torch.Generator | None
) -> torch.Tensor:
    """random_start for one radius or one per row (each row scaled to its own radius)."""
    if not isinstance(eps, torch.Tensor):
        return random_start(x, eps, norm, generator=generator)
    unit = random_start(x, 1.0, norm, generator=generator)
    return unit * eps.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _ascend(
    objective: Objective,
    x: torch.Tensor,
    best: _Best,
    eps: Radius,
    norm: str,
    steps: int,
    alpha: Radius,
    start: torch.Tensor | None,
    clamp: tuple[float, float] | None,
) -> None:
    """One PGD run from one start (None: from x itself), offering every iterate to `best`."""
    delta = start.to(x.device, x.dtype) if start is not None else torch.zeros_like(x)
    delta = _clamp(x, _project(delta, eps, norm), clamp)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            val = _values(objective, x + delta)
            (grad,) = torch.autograd.grad(val.sum(), delta)
        best.offer(val, delta)
        with torch.no_grad():
            delta = delta.detach() + alpha * _ascent(grad, norm)
            delta = _clamp(x, _project(delta, eps, norm), clamp)
    with torch.no_grad():
        best.offer(_values(objective, x + delta), delta)


def fgsm(
    objective: Objective,
    x: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    clamp: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One gradient step of size eps: sign of the gradient (L-inf) or its direction (L2)."""
    check_norm(norm)
    _check_eps(eps)
    x = x.detach()
    if eps == 0:
        return x.clone()
    z = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_values(objective, z).sum(), z)
    delta = _project(eps * _ascent(grad, norm), eps, norm)
    return (x + _clamp(x, delta, clamp)).detach()
