"""Minibatch optimal transport (squared Euclidean cost, uniform weights) with gradients.

Gradients follow the envelope theorem: the plan is solved without gradient (POT or a
log-domain Sinkhorn), then <P, C(x, y)> is differentiated with P fixed. Sliced W2 sorts
random 1-D projections, which is the same idea (the sort is the plan).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field

import numpy as np
import ot as pot
import torch
from torch import Tensor

SOLVERS = ("exact", "sinkhorn", "sliced")


def pairwise_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """C[i, j] = ||x_i - y_j||^2 over flattened samples (differentiable)."""
    x, y = x.flatten(1), y.flatten(1)
    c = x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T
    return c.clamp_min(0.0)


def _sinkhorn_log(cost: Tensor, reg: float, iters: int, tol: float = 1e-6) -> Tensor:
    """Entropic plan with uniform marginals, log-domain (stable for small reg)."""
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    f = torch.zeros(n, dtype=cost.dtype)
    g = torch.zeros(m, dtype=cost.dtype)
    for i in range(iters):
        f = reg * (log_a - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        g = reg * (log_b - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
        if i % 10 == 9:  # g-update makes columns exact; stop once rows are too
            rows = torch.exp((f[:, None] + g[None, :] - cost) / reg).sum(1)
            if (rows - 1.0 / n).abs().sum() < tol:
                break
    return torch.exp((f[:, None] + g[None, :] - cost) / reg)


def transport_plan(
    cost: Tensor, solver: str = "exact", *, reg: float = 0.05, sinkhorn_iters: int = 200
) -> Tensor:
    """The OT plan (n x m, sums to 1) for a cost matrix, uniform weights, no gradient.

    solver "exact" is POT's network simplex; "sinkhorn" is entropic OT with regularization
    reg * mean(cost), so reg is scale-free.
    """
    c = cost.detach().to("cpu", torch.float64)
    n, m = c.shape
    if solver == "exact":
        a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
        plan = torch.from_numpy(pot.emd(a, b, c.numpy(), numItermax=10_000_000))
    elif solver == "sinkhorn":
        scale = c.mean().item()
        plan = _sinkhorn_log(c, reg * scale if scale > 0 else reg, sinkhorn_iters)
    else:
        raise ValueError(f"transport_plan solver must be 'exact' or 'sinkhorn', got {solver!r}")
    return plan.to(cost.device, cost.dtype)


def _sliced_per_sample(x: Tensor, y: Tensor, n_projections: int, gen: torch.Generator) -> Tensor:
    if len(x) != len(y):
        raise ValueError(f"per-sample sliced W2 needs equal sizes, got {len(x)} and {len(y)}")
    x, y = x.flatten(1), y.flatten(1)
    theta = torch.randn(x.shape[1], n_projections, generator=gen, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device, x.dtype)
    px, ix = (x @ theta).sort(dim=0)
    py, _ = (y @ theta).sort(dim=0)
    # rank r of x is matched to rank r of y in every direction; scatter back to x's order
    per_rank = (px - py).pow(2)
    return torch.zeros_like(per_rank).scatter(0, ix, per_rank).mean(1)


def _check(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"unknown OT solver {solver!r}; choose from {', '.join(SOLVERS)}")


def _generator_or_seed0(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, else a fresh one seeded 0 (sliced costs reproducible by default)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def per_sample_ot_cost(
    x: Tensor,
    y: Tensor,
    solver: str = "exact",
    *,
    reg: float = 0.05,
    sinkhorn_iters: int = 200,
    n_projections: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Each x_i's share of the transport cost to y: n * sum_j P_ij C_ij (mean = ot_cost).

    Differentiable in x and y with the plan fixed. "sliced" needs len(x) == len(y).
    """
    _check(solver)
    if solver == "sliced":
        return _sliced_per_sample(x, y, n_projections, _generator_or_seed0(generator))
    cost = pairwise_sq_dists(x, y)
    plan = transport_plan(cost, solver, reg=reg, sinkhorn_iters=sinkhorn_iters)
    return len(x) * (plan * cost).sum(1)


def ot_cost(
    x: Tensor,
    y: Tensor,
    solver: str = "exact",
    *,
    reg: float = 0.05,
    sinkhorn_iters: int = 200,
    n_projections: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Squared W2 between the empirical measures of x and y (sliced: SW2^2), differentiable."""
    _check(solver)
    if solver == "sliced" and len(x) != len(y):
        seed = int(torch.randint(2**31 - 1, (1,), generator=_generator_or_seed0(generator)))
        sw = pot.sliced_wasserstein_distance(
            x.flatten(1), y.flatten(1), n_projections=n_projections, p=2, seed=seed
        )
        return sw**2
    return per_sample_ot_cost(
        x,
        y,
        solver,
        reg=reg,
        sinkhorn_iters=sinkhorn_iters,
        n_projections=n_projections,
        generator=generator,
    ).mean()


def exact_w2(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Exact W2 (not squared) between two point clouds: flatgen.metrics.wasserstein2."""
    from flatgen.metrics import wasserstein2

    return wasserstein2(*(v.detach() if isinstance(v, Tensor) else v for v in (x, y)))


@dataclass
class OTDistance:
    """An OT solver with its settings and its own seeded generator (for sliced projections)."""

    solver: str = "exact"
    _: KW_ONLY
    reg: float = 0.05
    sinkhorn_iters: int = 200
    n_projections: int = 64
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check(self.solver)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _kw(self) -> dict:
        return dict(
            solver=self.solver,
            reg=self.reg,
            sinkhorn_iters=self.sinkhorn_iters,
            n_projections=self.n_projections,
            generator=self.generator,
        )

    def cost(self, x: Tensor, y: Tensor) -> Tensor:
        """Squared (sliced) W2, differentiable."""
        return ot_cost(x, y, **self._kw())

    def per_sample(self, x: Tensor, y: Tensor) -> Tensor:
        """Each x_i's share of the transport cost (mean = cost)."""
        return per_sample_ot_cost(x, y, **self._kw())
