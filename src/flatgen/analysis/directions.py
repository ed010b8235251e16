"""Filters (Li et al. 2018): filter-normalized random directions and per-filter balls.

A filter is one slice along dim 0 of a weight (an output row of a Linear, an output channel
of a Conv). 1-D parameters (biases, norm scales and shifts) follow a `BiasMode`. This module
is the one definition of a filter in flatgen.analysis: `filter_normalize` (one tensor) and
`Filters` (a whole ParamSpace, as flat vectors) share `_rows`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from flatgen.analysis.params import ParamSpace

# how 1-D parameters (biases, norm scales and shifts) enter a direction:
#   "zero"   left out (direction 0), Li et al.'s ignore='biasbn' and the default here: they are
#            few, and scaling them like filters makes the plot depend on arbitrary offsets
#   "copy"   the direction equals the weights, as in Li et al.'s code when biases are kept
#   "filter" the whole vector is one filter, rescaled to the parameter's norm
BiasMode = Literal["zero", "copy", "filter"]
BIAS_MODES: tuple[str, ...] = ("zero", "copy", "filter")


def _check_bias(bias: str) -> None:
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}; choose from {', '.join(BIAS_MODES)}")


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as (filters, filter size): rows along dim 0, or one row for a 1-D tensor."""
    return t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)


def filter_normalize(
    direction: torch.Tensor, weight: torch.Tensor, bias: BiasMode = "zero"
) -> torch.Tensor:
    """Rescale each filter of `direction` to the norm of the same filter of `weight`.

    A filter is one slice along dim 0 (an output row of a Linear, an output channel of a Conv).
    1-D tensors follow `bias`.
    """
    _check_bias(bias)
    weight = weight.detach()
    if weight.ndim <= 1 and bias == "zero":
        return torch.zeros_like(weight)
    if weight.ndim <= 1 and bias == "copy":
        return weight.clone()
    d, w = _rows(direction), _rows(weight)
    d_norm = d.norm(dim=1, keepdim=True)
    scale = torch.where(d_norm > 0, w.norm(dim=1, keepdim=True) / d_norm, torch.zeros_like(d_norm))
    return (d * scale).reshape(weight.shape)


class Filters:
    """The filters of a ParamSpace, for flat vectors: which filter each coordinate is in, and
    each filter's weight norm (the radius scale of a filter-normalized ball).

    1-D parameters are one filter with bias="filter" and have radius 0 (are left out) with
    bias="zero"; "copy" has no ball and is refused.
    """

    def __init__(self, space: ParamSpace, bias: BiasMode = "zero"):
        _check_bias(bias)
        if bias == "copy":
            raise ValueError("bias='copy' defines no per-filter ball; use 'zero' or 'filter'")
        ids, norms, start = [], [], 0
        for p in space.params:
            rows = _rows(p.detach())
            n_rows, size = rows.shape
            norm = rows.norm(dim=1)
            if p.ndim <= 1 and bias == "zero":
                norm = torch.zeros_like(norm)
            ids.append(torch.arange(start, start + n_rows, device=p.device).repeat_interleave(size))
            norms.append(norm)
            start += n_rows
        self.space = space
        self.n_filters = start
        self.ids = torch.cat(ids)  # (n,) filter index of every coordinate
        self.weight_norms = torch.cat(norms)  # (n_filters,)

    def norms(self, flat: torch.Tensor) -> torch.Tensor:
        """The L2 norm of every filter of a flat vector, shape (n_filters,)."""
        sq = torch.zeros(self.n_filters, dtype=flat.dtype, device=flat.device)
        return sq.index_add_(0, self.ids, flat.detach() ** 2).sqrt()

    def ratios(self, flat: torch.Tensor) -> torch.Tensor:
        """||filter_i of flat|| / ||weight filter_i|| (0 where the weight's filter is 0)."""
        w = self.weight_norms.to(flat.dtype)
        return torch.where(w > 0, self.norms(flat) / w.clamp_min(torch.finfo(w.dtype).tiny), 0.0)

    def expand(self, per_filter: torch.Tensor) -> torch.Tensor:
        """A per-filter value repeated over the filter's coordinates, shape (n,)."""
        return per_filter[self.ids]

    def normalize(self, flat: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
        """Each filter of `flat` rescaled to radius * the weight's filter norm (0 stays 0)."""
        n = self.norms(flat)
        scale = torch.where(n > 0, radius * self.weight_norms / n, torch.zeros_like(n))
        return flat * self.expand(scale)

    def project(self, flat: torch.Tensor, radius: float) -> torch.Tensor:
        """`flat` projected onto the ball ||filter_i|| <= radius * ||weight filter_i|| for all i."""
        n = self.norms(flat)
        limit = radius * self.weight_norms
        scale = torch.where(n > limit, limit / n.clamp_min(torch.finfo(n.dtype).tiny), 1.0)
        return flat * self.expand(scale)


def random_direction(
    model: nn.Module,
    generator: torch.Generator | int = 0,
    *,
    bias: BiasMode = "zero",
    space: ParamSpace | None = None,
) -> torch.Tensor:
    """A Gaussian direction over the trainable parameters, filter-normalized, as a flat vector."""
    space = space if space is not None else ParamSpace(model)
    g = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    parts = []
    for p in space.params:
        d = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.device, p.dtype)
        parts.append(filter_normalize(d, p, bias).reshape(-1))
    return torch.cat(parts)
