"""Filter-normalized random directions in weight space (Li et al. 2018)."""

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


def filter_normalize(
    direction: torch.Tensor, weight: torch.Tensor, bias: BiasMode = "zero"
) -> torch.Tensor:
    """Rescale each filter of `direction` to the norm of the same filter of `weight`.

    A filter is one slice along dim 0 (an output row of a Linear, an output channel of a Conv).
    1-D tensors follow `bias`.
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"unknown bias mode {bias!r}; choose from {', '.join(BIAS_MODES)}")
    weight = weight.detach()
    if weight.ndim <= 1:
        if bias == "zero":
            return torch.zeros_like(weight)
        if bias == "copy":
            return weight.clone()
        d_norm, w_norm = direction.norm(), weight.norm()
        return direction * (w_norm / d_norm) if d_norm > 0 else torch.zeros_like(weight)
    d = direction.reshape(direction.shape[0], -1)
    w = weight.reshape(weight.shape[0], -1)
    d_norm = d.norm(dim=1, keepdim=True)
    scale = torch.where(d_norm > 0, w.norm(dim=1, keepdim=True) / d_norm, torch.zeros_like(d_norm))
    return (d * scale).reshape(weight.shape)


def random_direction(
    model: nn.Module,
    generator: torch.Generator | int = 0,
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
