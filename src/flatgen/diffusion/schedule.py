"""Noise schedule: betas and cumulative alphas from diffusers' DDPMScheduler, plus forward noising."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

SCHEDULE_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


class NoiseSchedule:
    """Discrete-time DDPM schedule with T steps (t = 0 .. T-1).

    `alphas_cumprod[t]` is abar_t; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
    """

    def __init__(self, kind: str = "linear", timesteps: int = 1000):
        if kind not in SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULE_NAMES)}")
        self.kind = kind
        self.scheduler = DDPMScheduler(
            num_train_timesteps=timesteps,
            beta_schedule=SCHEDULE_NAMES[kind],
            prediction_type="epsilon",
            clip_sample=True,
        )
        self.timesteps = timesteps
        # float64 for the sampler's coefficient arithmetic; cast at use
        self.betas = self.scheduler.betas.double()
        self.alphas_cumprod = self.scheduler.alphas_cumprod.double()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t for integer timesteps t (one per sample)."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
        abar = abar.view(-1, *([1] * (x0.ndim - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def respaced(self, steps: int) -> list[int]:
        """`steps` evenly spaced timesteps from 0 to T-1, ascending (guided-diffusion's space_timesteps)."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.timesteps}, got {steps}")
        if steps == 1:
            return [self.timesteps - 1]
        stride = (self.timesteps - 1) / (steps - 1)
        return sorted({round(i * stride) for i in range(steps)})
