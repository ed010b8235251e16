"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flatgen.analysis.hvp import HessianOperator, HVPMethod, LinearOperator, hessian_operator
from flatgen.analysis.lanczos import Lanczos
from flatgen.analysis.params import LossFn, ProgressFn, report
from flatgen.analysis.trace import rademacher


@dataclass
class SpectralDensity:
    """A Gaussian-broadened eigenvalue density on a grid, plus the quadrature it came from.

    density integrates to ~1 over grid (np.trapezoid(density, grid)); nodes/weights are the
    Ritz values and squared first components of each probe's Lanczos run (weights of a probe
    sum to 1).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray  # (n_probes, n_iter)
    weights: np.ndarray  # (n_probes, n_iter)
    sigma: float
    n_params: int
    n_matvecs: int

    def mean(self) -> float:
        """Mean eigenvalue of the quadrature: an estimate of trace / n_params."""
        return float(np.mean(np.sum(self.nodes * self.weights, axis=1)))

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "grid": self.grid.tolist(),
            "density": self.density.tolist(),
            "sigma": self.sigma,
            "mean": self.mean(),
            "n_params": self.n_params,
            "n_matvecs": self.n_matvecs,
        }


def broaden(
    nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, *, sigma: float
) -> np.ndarray:
    """Average over probes of sum_j w_j N(x; node_j, sigma^2) on the grid."""
    z = (grid[None, None, :] - nodes[..., None]) / sigma
    kern = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
    return np.mean(np.sum(weights[..., None] * kern, axis=1), axis=0)


def slq(
    op: LinearOperator,
    *,
    n_iter: int = 64,
    n_probes: int = 4,
    grid_size: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: n_probes Lanczos runs of n_iter steps from random
    Rademacher starts. sigma is the Gaussian broadening (default rel_sigma times the spectral
    range found); the grid extends 5 sigma past the extreme nodes."""
    g = torch.Generator().manual_seed(seed)
    n_iter = min(n_iter, op.n)
    nodes = np.zeros((n_probes, n_iter))
    weights = np.zeros((n_probes, n_iter))
    total = n_probes * n_iter
    for p in range(n_probes):
        lz = Lanczos(op, n_iter, v0=rademacher(op.n, g, op), generator=g)
        for _ in range(n_iter):
            lz.step()
            report(progress, p * n_iter + lz.m, total)
        theta, s, _ = lz.ritz()
        nodes[p], weights[p] = theta, s[0] ** 2
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = rel_sigma * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_size)
    return SpectralDensity(
        grid=grid,
        density=broaden(nodes, weights, grid, sigma=sigma),
        nodes=nodes,
        weights=weights,
        sigma=float(sigma),
        n_params=op.n,
        n_matvecs=total,
    )


def hessian_spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    n_iter: int = 64,
    n_probes: int = 4,
    grid_size: int = 512,
    sigma: float | None = None,
    rel_sigma: float = 0.01,
    seed: int = 0,
    method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
    progress: ProgressFn | None = None,
) -> SpectralDensity:
    """Eigenvalue density of the Hessian of loss_fn(model) by SLQ (see slq); `operator`: a
    HessianOperator of this model and loss to share."""
    with hessian_operator(model, loss_fn, method=method, operator=operator) as op:
        return slq(
            op, n_iter=n_iter, n_probes=n_probes, grid_size=grid_size, sigma=sigma,
            rel_sigma=rel_sigma, seed=seed, progress=progress,
        )  # fmt: skip
