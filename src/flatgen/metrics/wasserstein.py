"""Exact and sliced 2-Wasserstein distances between empirical sample sets (POT)."""

from __future__ import annotations

import math

import numpy as np
import ot
from scipy.spatial.distance import cdist

from flatgen.metrics._arrays import ArrayLike, as_pair

# POT's default (1e5) stops the network simplex early on a few thousand points and warns;
# the exact cost needs it to run to the optimum.
_EMD_MAX_ITER = 10_000_000


def wasserstein2(x: ArrayLike, y: ArrayLike) -> float:
    """Exact W2 between the uniform empirical measures on x (N x ...) and y (M x ...).

    Sets may differ in size; samples are flattened to vectors. Cost is O(N M) memory and
    roughly cubic time, so keep N, M to a few thousand (use sliced_wasserstein2 beyond).
    """
    xm, ym = as_pair(x, y)
    a = np.full(len(xm), 1.0 / len(xm))
    b = np.full(len(ym), 1.0 / len(ym))
    # cdist takes differences directly; ot.dist's |x|^2 + |y|^2 - 2 x.y expansion cancels
    # badly for close points (W2(x, x) came out 3e-8, not 0).
    cost = cdist(xm, ym, metric="sqeuclidean")
    w2sq = float(ot.emd2(a, b, cost, numItermax=_EMD_MAX_ITER))
    return math.sqrt(max(w2sq, 0.0))  # rounding can leave a tiny negative at W2 = 0


def sliced_wasserstein2(
    x: ArrayLike, y: ArrayLike, *, n_projections: int = 256, seed: int = 0
) -> float:
    """Sliced W2 (root mean squared 1-D W2 over random directions) between x and y."""
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    xm, ym = as_pair(x, y)
    return float(
        ot.sliced_wasserstein_distance(xm, ym, n_projections=n_projections, p=2, seed=seed)
    )
