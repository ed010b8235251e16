"""The diffusion training loss (eps, v or x0 target), with optional input perturbation (DDPM-IP)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flatgen.diffusion.schedule import NoiseSchedule


def diffusion_loss(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    t: torch.Tensor,
    noise: torch.Tensor,
    ip_gamma: float = 0.0,
    ip_noise: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """|| target - net(x_t, t) ||^2 with x_t built from noise (+ ip_gamma * ip_noise, DDPM-IP).

    The target is eps, v or x0 as schedule.prediction_type says. Input perturbation perturbs
    only the network input; the target is built from `noise`, unperturbed.
    """
    input_noise = noise
    if ip_gamma > 0:
        if ip_noise is None:
            raise ValueError("ip_gamma > 0 needs ip_noise")
        input_noise = noise + ip_gamma * ip_noise
    x_t = schedule.add_noise(x0, input_noise, t)
    target = schedule.target(x0, noise, t)
    per_sample = (model(x_t, t) - target).pow(2).flatten(1).mean(1)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def draw_training_noise(
    x0: torch.Tensor, schedule: NoiseSchedule, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, noise, ip_noise) for a batch, drawn on the CPU from `generator` (device-independent)."""
    n = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (n,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    ip_noise = torch.randn(x0.shape, generator=generator)
    return t.to(x0.device), noise.to(x0.device, x0.dtype), ip_noise.to(x0.device, x0.dtype)


def fixed_diffusion_loss_fn(
    x0: torch.Tensor, schedule: NoiseSchedule, *, draws: int = 1, seed: int = 0
) -> Callable[[nn.Module], torch.Tensor]:
    """A deterministic loss_fn(model) on fixed (x0, t, noise) triples, for Hessians and landscapes.

    Each of the `draws` repetitions of x0 gets its own t and noise, drawn once from `seed`, so
    every call (every Hessian-vector product, every grid point) sees the same function.
    """
    g = torch.Generator().manual_seed(seed)
    xs = x0.repeat(draws, *([1] * (x0.ndim - 1)))
    t, noise, _ = draw_training_noise(xs, schedule, g)

    def loss_fn(model: nn.Module) -> torch.Tensor:
        return diffusion_loss(model, xs, schedule, t=t, noise=noise)

    return loss_fn
