"""Samplers with T' steps out of T: ADM's stochastic respaced sampler and DDIM (eta = 0).

Both walk the respaced timesteps t_{n-1} > ... > t_0 (guided-diffusion's `space_timesteps`),
feed the *original* timestep to the network, and clip the predicted x0 to [-1, 1] as ADM does
(images only: toy 2-D data lives outside that box).

Timestep chains. The ADM sampler's chain is `schedule.respaced(N)`: N timesteps evenly spaced
from 0 to T-1 and rounded; diffusers' DDPMScheduler walks the same chain with
timestep_spacing="linspace" (what `flatgen export` writes), stepping to the next chain entry.
diffusers' DDIMScheduler instead always steps from t to t - T/N; on its default "leading" chain
(0, T/N, 2T/N, ...) that is the next entry, so `denoise_chain(..., ts=that chain, sampler="ddim")`
with a final step to abar = 1 (set_alpha_to_one) reproduces DDIMPipeline(eta=0,
use_clipped_model_output=True). flatgen's own `sample(..., sampler="ddim")` uses the respaced chain.

A network that predicts v or x0 (schedule.prediction_type) is read through
schedule.eps_from_output, so both samplers and on_step always see eps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flatgen.diffusion.schedule import NoiseSchedule

SAMPLERS = ("adm", "ddim")


@dataclass
class SamplerStep:
    """What one sampling step saw: the input x_t, its timestep, and the predicted noise."""

    index: int
    t: int
    x_t: torch.Tensor
    eps: torch.Tensor


def _as_batch_t(t: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), t, device=device, dtype=torch.long)


def denoise_chain(
    model: nn.Module,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    *,
    ts: Sequence[int],
    sampler: str = "adm",
    generator: torch.Generator | None = None,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
    final: bool = True,
) -> torch.Tensor:
    """Run the sampler from x at timestep ts[-1] down the ascending timesteps ts.

    The one implementation of both samplers' update rule. final=True takes the last step to the
    data; final=False stops and returns x_{ts[0]} (chains that start or stop mid-way measure
    exposure bias). Gradients flow when the caller enables them (attacks through the sampler).
    The ADM sampler's per-step noise is drawn on the CPU from `generator`. clip=None clips the
    predicted x0 to [-1, 1] as the schedule's clip_sample says or, where that is None, for
    images (N, C, H, W), whose pixels live there, and not for vector data such as toy2d.
    """
    if clip is None:
        clip = schedule.clip_sample if schedule.clip_sample is not None else x.ndim == 4
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if not ts or list(ts) != sorted(set(ts)):
        raise ValueError("ts must be a non-empty ascending list of distinct timesteps")
    abar = schedule.alphas_cumprod
    for i in reversed(range(0 if final else 1, len(ts))):
        t = ts[i]
        a_t = abar[t].item()
        a_prev = abar[ts[i - 1]].item() if i > 0 else 1.0
        tt = _as_batch_t(t, x.shape[0], x.device)
        eps = schedule.eps_from_output(model(x, tt), x, tt)
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
        # ADM ancestral step on the respaced chain: beta_i = 1 - abar_t / abar_prev
        beta = 1 - a_t / a_prev
        coef_x0 = beta * a_prev**0.5 / (1 - a_t)
        coef_xt = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        x = coef_x0 * x0 + coef_xt * x
        if i > 0:
            var = beta * (1 - a_prev) / (1 - a_t)  # posterior variance ("fixed small")
            noise = torch.randn(tuple(x.shape), generator=generator).to(x.device, x.dtype)
            x = x + var**0.5 * noise
    return x


@torch.no_grad()
def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int,
    sampler: str = "adm",
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Generate shape[0] samples with `steps` network evaluations.

    x_T and the sampler's per-step noise come from `generator` on the CPU, so a seed gives the
    same samples on any device. eps_scale(t) divides the predicted noise (ADM-ES epsilon scaling).
    on_step, if given, is called with every step's input and prediction (exposure-bias metrics).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if x_T is None:
        x_T = torch.randn(shape, generator=generator)
    return denoise_chain(model, schedule, x_T.to(device, dtype), ts=schedule.respaced(steps),
                         sampler=sampler, generator=generator, clip=clip, eps_scale=eps_scale,
                         on_step=on_step)
