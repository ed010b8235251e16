"""Stochastic trace estimation: Hutchinson (Rademacher probes) and Hutch++."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from flatgen.analysis.hvp import HessianOperator, HVPMethod, LinearOperator, hessian_operator
from flatgen.analysis.params import LossFn, ProgressFn, report

TraceMethod = Literal["hutch++", "hutchinson"]


@dataclass
class TraceResult:
    """A trace estimate with its standard error; float(result) is the estimate."""

    estimate: float
    stderr: float
    n_matvecs: int
    method: str

    def __float__(self) -> float:
        return self.estimate


def rademacher(n: int, generator: torch.Generator, like: LinearOperator) -> torch.Tensor:
    """A vector of n independent +-1 entries on the operator's device and dtype."""
    z = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8)
    return (2 * z - 1).to(like.device, like.dtype)


def _mean_and_stderr(samples: list[float]) -> tuple[float, float]:
    t = torch.tensor(samples, dtype=torch.float64)
    se = float(t.std(unbiased=True) / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
    return float(t.mean()), se


def hutchinson(
    op: LinearOperator, n_matvecs: int = 100, *, seed: int = 0, progress: ProgressFn | None = None
) -> TraceResult:
    """tr(A) ~ mean of z^T A z over Rademacher probes z; stderr from the sample spread."""
    if n_matvecs < 1:
        raise ValueError(f"n_matvecs must be >= 1, got {n_matvecs}")
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n_matvecs):
        z = rademacher(op.n, g, op)
        samples.append(float(z @ op.matvec(z)))
        report(progress, i + 1, n_matvecs)
    est, se = _mean_and_stderr(samples)
    return TraceResult(est, se, n_matvecs, "hutchinson")


def hutchpp(
    op: LinearOperator, n_matvecs: int = 100, *, seed: int = 0, progress: ProgressFn | None = None
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco, Woodruff 2021): exact trace on a sketched top subspace.

    A third of the products sketch the range of A (Q = orth(A S)), a third give tr(Q^T A Q)
    exactly, the rest estimate the trace of the deflated remainder with Hutchinson. The
    stderr is that of the remainder's Hutchinson part. Falls back to Hutchinson below 3
    products.
    """
    if n_matvecs < 3:
        return hutchinson(op, n_matvecs, seed=seed, progress=progress)
    g = torch.Generator().manual_seed(seed)
    k = n_matvecs // 3
    n_rest = n_matvecs - 2 * k
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        report(progress, done, n_matvecs)

    k = min(k, op.n)
    sketch = torch.empty((op.n, k), dtype=op.dtype, device=op.device)
    for i in range(k):
        sketch[:, i] = op.matvec(rademacher(op.n, g, op))
        tick()
    q, _ = torch.linalg.qr(sketch, mode="reduced")
    del sketch
    top = 0.0
    for i in range(q.shape[1]):
        top += float(q[:, i] @ op.matvec(q[:, i].contiguous()))
        tick()
    samples = []
    for _ in range(n_rest):
        z = rademacher(op.n, g, op)
        z = z - q @ (q.T @ z)
        samples.append(float(z @ op.matvec(z)))
        tick()
    rest, se = _mean_and_stderr(samples)
    return TraceResult(top + rest, se, done, "hutch++")


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    method: TraceMethod = "hutch++",
    n_matvecs: int = 100,
    seed: int = 0,
    hvp_method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
    progress: ProgressFn | None = None,
) -> TraceResult:
    """Estimate the Hessian trace of loss_fn(model) from n_matvecs Hessian-vector products.

    Returns a TraceResult (float(result) is the estimate, .stderr its standard error).
    `operator`: a HessianOperator of this model and loss to use (and leave open).
    """
    estimators = {"hutch++": hutchpp, "hutchinson": hutchinson}
    if method not in estimators:
        raise ValueError(f"unknown trace method {method!r}; choose from {', '.join(estimators)}")
    with hessian_operator(model, loss_fn, method=hvp_method, operator=operator) as op:
        return estimators[method](op, n_matvecs=n_matvecs, seed=seed, progress=progress)
