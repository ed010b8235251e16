"""The sampler's update rule as a plain function: differentiable, and able to start or stop at any
timestep of a respaced chain.

It mirrors flatgen.diffusion.sample step for step (same coefficients, same order of random
draws), so that a full chain here gives the same samples as `sample` (tests check this). The
robustness code needs what `sample` does not offer: gradients through the chain (attacks on x_T)
and chains that start at a forward-noised x_t' and stop at t > 0 (the variance error delta_t).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from flatgen.diffusion import SAMPLERS, NoiseSchedule, SamplerStep


def denoise_chain(
    model: nn.Module,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    x: torch.Tensor,
    sampler: str = "adm",
    generator: torch.Generator | None = None,
    clip: bool = True,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
    final: bool = True,
) -> torch.Tensor:
    """Run the sampler from x at timestep ts[-1] down the ascending timesteps ts.

    final=True takes the last step to the data (what `sample` returns); final=False stops and
    returns the state x_{ts[0]}. Gradients flow when the caller enables them. The ADM sampler's
    per-step noise is drawn on the CPU from `generator`, as `sample` draws it.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if list(ts) != sorted(set(ts)) or not ts:
        raise ValueError("ts must be a non-empty ascending list of distinct timesteps")
    abar = schedule.alphas_cumprod
    stop = 0 if final else 1
    for i in reversed(range(stop, len(ts))):
        t = ts[i]
        a_t = abar[t].item()
        a_prev = abar[ts[i - 1]].item() if i > 0 else 1.0
        eps = model(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        if eps_scale is not None:
            eps = eps / eps_scale(t)
        if on_step is not None:
            on_step(SamplerStep(index=i, t=t, x_t=x, eps=eps))
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if clip:
            x0 = x0.clamp(-1, 1)
        if sampler == "ddim":
            eps_hat = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps_hat
            continue
        beta = 1 - a_t / a_prev
        coef_x0 = beta * a_prev**0.5 / (1 - a_t)
        coef_xt = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        x = coef_x0 * x0 + coef_xt * x
        if i > 0:
            var = beta * (1 - a_prev) / (1 - a_t)
            noise = torch.randn(tuple(x.shape), generator=generator).to(x.device, x.dtype)
            x = x + var**0.5 * noise
    return x


def ddim_generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    steps: int,
    clip: bool = True,
) -> torch.Tensor:
    """Deterministic DDIM samples from x_T with `steps` network calls, differentiable in x_T."""
    return denoise_chain(model, schedule, schedule.respaced(steps), x_T, sampler="ddim", clip=clip)
