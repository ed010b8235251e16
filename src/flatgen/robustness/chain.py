"""Differentiable sampling chains for the robustness code.

`denoise_chain` (flatgen.diffusion.samplers) is the sampler's own update rule, the one `sample`
runs: here it is used with gradients (attacks on x_T) and for chains that start at a
forward-noised x_t' and stop at t > 0 (the variance error delta_t).
"""

from __future__ import annotations

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.diffusion.samplers import denoise_chain


def ddim_generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    clip: bool | None = None,
) -> torch.Tensor:
    """Deterministic DDIM samples from x_T with `steps` network calls, differentiable in x_T."""
    return denoise_chain(model, schedule, x_T, ts=schedule.respaced(steps), sampler="ddim",
                         clip=clip)
