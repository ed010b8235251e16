"""Time-conditioned MLP denoiser for 2-D data."""

from __future__ import annotations

import math

import torch
from torch import nn

from flatgen.models.registry import ModelPreset, register_model_preset


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in ADM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeMLP(nn.Module):
    """eps = MLP([x, emb(t)]) with SiLU activations
    (smooth, so WRM's inner problem stays concave)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, *, emb_dim: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.emb_dim = emb_dim
        layers: list[nn.Module] = []
        width = dim + emb_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.net(torch.cat([x, timestep_embedding(t, self.emb_dim)], dim=-1))


register_model_preset(ModelPreset(
    name="mlp2d",
    build=lambda shape, dropout: TimeMLP(dim=shape[0], dropout=dropout or 0.0),
    sample_ndim=1,
    help="time-conditioned MLP (3 x 128, SiLU) for vector data such as toy2d",
))
