"""1-D and 2-D loss landscapes through the trained weights (Li et al. 2018), saved as .npz."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flatgen.analysis.batched import Vectorize, losses_at
from flatgen.analysis.directions import BiasMode, random_direction
from flatgen.analysis.params import LossFn, ParamSpace, ProgressFn, analysis_mode
from flatgen.io import atomic_write


@dataclass
class Landscape:
    """Losses on a line (dim 1) or plane (dim 2) through the weights w.

    losses[i] = L(w + x_i d1) or losses[i, j] = L(w + x_i d1 + y_j d2), with coords = [x] or
    [x, y]; loss0 = L(w).
    """

    coords: list[np.ndarray]
    losses: np.ndarray
    loss0: float
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.coords)


def grid_coords(n_points: int, span: float) -> np.ndarray:
    """n_points evenly spaced in [-span, span]; the middle one is exactly 0 when n_points is odd."""
    if n_points < 2:
        raise ValueError(f"a landscape needs at least 2 grid points per axis, got {n_points}")
    x = np.linspace(-span, span, n_points)
    if n_points % 2 == 1:
        x[n_points // 2] = 0.0
    return x


def loss_landscape(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    dim: int = 2,
    grid: int = 21,
    span: float = 1.0,
    seed: int = 0,
    bias: BiasMode = "zero",
    directions: torch.Tensor | None = None,
    batch_points: int = 8,
    vectorize: Vectorize = "auto",
    progress: ProgressFn | None = None,
) -> Landscape:
    """Loss on a grid x grid plane (dim=2) or a line of grid points (dim=1) through the weights.

    Directions are Gaussian, filter-normalized (each filter scaled to its weight's norm), drawn
    from `seed`; 1-D parameters (biases, norm layers) follow `bias`, zeroed by default. Pass
    `directions` (dim, n_params) to reuse your own. Coordinates run over [-span, span] in units
    of the filter norms. Points are evaluated batch_points at a time (see losses_at).
    """
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim}")
    space = ParamSpace(model)
    if directions is None:
        g = torch.Generator().manual_seed(seed)
        directions = torch.stack(
            [random_direction(model, g, bias=bias, space=space) for _ in range(dim)]
        )
    if directions.shape != (dim, space.n):
        raise ValueError(f"directions must be ({dim}, {space.n}), got {tuple(directions.shape)}")
    axis = grid_coords(grid, span)
    axes = [axis] * dim
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dim)
    with analysis_mode(model):
        with torch.no_grad():
            loss0 = float(loss_fn(model))
        vals = losses_at(
            model,
            loss_fn,
            directions,
            coords=torch.from_numpy(mesh),
            space=space,
            batch_points=batch_points,
            vectorize=vectorize,
            progress=progress,
        )
    meta = {"seed": seed, "bias": bias, "norm": "filter", "span": span, "grid": grid}
    return Landscape(
        coords=[a.copy() for a in axes], losses=vals.reshape([grid] * dim), loss0=loss0, meta=meta
    )


def save_landscape(landscape: Landscape, path: str | os.PathLike) -> Path:
    """Write the landscape to an .npz (atomically) so plots can be redrawn without the model."""
    path = Path(path)
    arrays = {f"coords{i}": c for i, c in enumerate(landscape.coords)}
    arrays["losses"] = landscape.losses
    arrays["loss0"] = np.array(landscape.loss0)
    arrays["meta"] = np.array(json.dumps(landscape.meta))
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_landscape(path: str | os.PathLike) -> Landscape:
    """Read a landscape written by save_landscape (no pickles)."""
    with np.load(Path(path), allow_pickle=False) as z:
        n_axes = sum(1 for k in z.files if k.startswith("coords"))
        return Landscape(
            coords=[z[f"coords{i}"] for i in range(n_axes)],
            losses=z["losses"],
            loss0=float(z["loss0"]),
            meta=json.loads(str(z["meta"])),
        )
