"""The loss at many points of weight space, batched with torch.func.vmap over stacked weights."""

from __future__ import annotations

import time
import warnings
from typing import Literal

import numpy as np
import torch
from torch import nn

from flatgen.analysis.params import (
    LossFn,
    ParamSpace,
    ProgressFn,
    composite_group_norm,
    functional_loss,
    report,
)

Vectorize = bool | Literal["auto"]


def losses_at(
    model: nn.Module,
    loss_fn: LossFn,
    directions: torch.Tensor,
    *,
    coords: torch.Tensor,
    space: ParamSpace | None = None,
    batch_points: int = 8,
    vectorize: Vectorize = "auto",
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """loss at w + coords[p] @ directions for every row p, with w the current weights.

    directions: (m, n) flat over the trainable parameters; coords: (P, m). vectorize=True
    evaluates batch_points points per call with vmap over stacked weights (memory grows with
    batch_points); False evaluates them one by one; "auto" times both on the first batch and
    keeps the faster (vmap wins where per-call overhead dominates: small models, small data
    batches, GPUs; a compute-bound conv net on CPU gains nothing). A model vmap cannot batch
    falls back to one by one with a warning. The model is not modified. Call inside
    analysis_mode for eval-mode losses.
    """
    space = space if space is not None else ParamSpace(model)
    center = space.flat()
    directions = directions.to(center.device, center.dtype)
    coords = torch.as_tensor(coords).to(center.device, center.dtype)
    if coords.ndim != 2 or coords.shape[1] != directions.shape[0]:
        raise ValueError(f"coords must be (P, {directions.shape[0]}), got {tuple(coords.shape)}")
    n_points = coords.shape[0]
    out = np.empty(n_points)

    def single(flat: torch.Tensor) -> torch.Tensor:
        return functional_loss(model, loss_fn, space.to_dict(flat))

    def one_by_one(flats: torch.Tensor) -> torch.Tensor:
        return torch.stack([single(f) for f in flats])

    vmapped = torch.func.vmap(single)

    def batched(flats: torch.Tensor) -> torch.Tensor:
        with composite_group_norm(model):
            return vmapped(flats)

    use_vmap = vectorize is True or (vectorize == "auto" and batch_points > 1 and n_points > 1)
    tune = vectorize == "auto" and use_vmap
    with torch.no_grad():
        start = 0
        while start < n_points:
            stop = min(start + (batch_points if use_vmap else 1), n_points)
            flats = center + coords[start:stop] @ directions
            if use_vmap:
                try:
                    t0 = time.perf_counter()
                    vals = batched(flats)
                    t_batched = time.perf_counter() - t0
                except (RuntimeError, NotImplementedError) as err:
                    warnings.warn(
                        f"vmap cannot batch this model ({err}); evaluating points one by one",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    use_vmap = False
                    continue
                if tune:  # once: is one by one faster on this model and machine?
                    tune = False
                    t0 = time.perf_counter()
                    one_by_one(flats)
                    use_vmap = t_batched < time.perf_counter() - t0
            else:
                vals = one_by_one(flats)
            out[start:stop] = vals.double().cpu().numpy()
            start = stop
            report(progress, stop, n_points)
    return out
