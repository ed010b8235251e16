"""Differentiable sampling chains for the robustness code.

`run_sampler` (flatgen.diffusion.samplers) is the walk `sample` runs, on the model's own chain
(a diffusers model's scheduler chain, else flatgen's respaced one; "-respaced" sampler names
keep flatgen's): here it is used with gradients (attacks on x_T) and for chains that start at a
forward-noised x_t' and stop at t > 0 (the variance error delta_t). `denoise_chain` walks an
explicit list of timesteps with a sampler's update rule.
"""

from __future__ import annotations

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.diffusion.samplers import denoise_chain, run_sampler


def ddim_generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    steps: int,
    clip: bool | None = None,
) -> torch.Tensor:
    """Deterministic DDIM samples from x_T with `steps` network calls, differentiable in x_T:
    `sample(..., sampler="ddim", x_T=x_T)` with gradients, on the model's own chain."""
    return run_sampler(model, schedule, x_T, steps=steps, sampler="ddim", clip=clip)


__all__ = ["ddim_generate", "denoise_chain"]
