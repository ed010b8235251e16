"""Conversion of sample sets (torch tensors or arrays, N x ...) to float64 N x D arrays."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def as_matrix(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Return x as a float64 N x D array (all but the first axis flattened)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty set of samples (N x ...), got shape {x.shape}"
        )
    x = x.reshape(x.shape[0], -1)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def as_pair(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return both sets as float64 matrices, checking that their dimensions agree."""
    xm, ym = as_matrix(x, "x"), as_matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(
            f"sample dimensions differ: {xm.shape[1]} vs {ym.shape[1]} "
            f"(shapes {tuple(np.shape(x))} and {tuple(np.shape(y))})"
        )
    return xm, ym
