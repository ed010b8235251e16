"""Samplers with T' steps out of T: ADM's stochastic respaced sampler and DDIM (eta = 0).

Both walk the respaced timesteps t_{n-1} > ... > t_0 (guided-diffusion's `space_timesteps`),
feed the *original* timestep to the network, and clip the predicted x0 to [-1, 1] as ADM does
(images only: toy 2-D data lives outside that box).

Timestep chains (schedule.chain). flatgen's own runs walk `schedule.respaced(N)`: N timesteps
evenly spaced from 0 to T-1 and rounded, each step going to the next entry; diffusers'
DDPMScheduler walks that chain with timestep_spacing="linspace" (what `flatgen export` writes).
A schedule read from a diffusers scheduler config walks, by default, that scheduler's own chain:
diffusers' set_timesteps (its spacing, "leading" by default, and steps_offset), DDPM stepping to
the next entry, DDIM from t to t - T/N and on to set_alpha_to_one's final abar, so `sample`
reproduces DDPMPipeline and DDIMPipeline(eta=0) from the same generator seed (x_T and the
per-step noise are drawn as torch.randn on the CPU generator, the stream diffusers' randn_tensor
draws). The "-respaced" sampler names keep flatgen's chain on any model.

A network that predicts v or x0 (schedule.prediction_type) is read through
schedule.eps_from_output, so both samplers and on_step always see eps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flatgen.diffusion.schedule import NoiseSchedule

# "adm" and "ddim" walk the model's own chain (a diffusers model's scheduler, else flatgen's
# respaced chain); the "-respaced" names always walk flatgen's respaced chain
SAMPLERS = ("adm", "ddim", "adm-respaced", "ddim-respaced")
RULES = ("adm", "ddim")


def parse_sampler(sampler: str) -> tuple[str, str | None]:
    """(update rule, chain) of a sampler name: "adm" -> ("adm", None), "ddim-respaced" ->
    ("ddim", "respaced"); chain None is the schedule's own."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    rule, _, chain = sampler.partition("-")
    return rule, chain or None


@dataclass
class SamplerStep:
    """What one sampling step saw: the input x_t, its timestep, and the predicted noise."""

    index: int
    t: int
    x_t: torch.Tensor
    eps: torch.Tensor


def _as_batch_t(t: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), t, device=device, dtype=torch.long)


def _walk(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor,
          pairs: Sequence[tuple[int, int]], rule: str, *, generator: torch.Generator | None,
          clip: bool, eps_scale, on_step) -> torch.Tensor:
    """flatgen's update rule down (t, t_prev) pairs (t_prev = -1: to the data, abar = 1)."""
    abar = schedule.alphas_cumprod
    for j, (t, prev) in enumerate(pairs):
        a_t = abar[t].item()
        a_prev = abar[prev].item() if prev >= 0 else 1.0
        tt = _as_batch_t(t, x.shape[0], x.device)
        eps = schedule.eps_from_output(model(x, tt), x, tt)
        if eps_scale is not None:
            eps = eps / eps_scale(t)
        if on_step is not None:
            on_step(SamplerStep(index=len(pairs) - 1 - j, t=t, x_t=x, eps=eps))
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if clip:
            x0 = x0.clamp(-1, 1)
        if rule == "ddim":  # DDIM, eta = 0, eps re-derived from the clipped x0 (as ADM does)
            eps_hat = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps_hat
            continue
        # ADM ancestral step on the respaced chain: beta_i = 1 - abar_t / abar_prev
        beta = 1 - a_t / a_prev
        coef_x0 = beta * a_prev**0.5 / (1 - a_t)
        coef_xt = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        x = coef_x0 * x0 + coef_xt * x
        if prev >= 0:
            var = beta * (1 - a_prev) / (1 - a_t)  # posterior variance ("fixed small")
            noise = torch.randn(tuple(x.shape), generator=generator).to(x.device, x.dtype)
            x = x + var**0.5 * noise
    return x


def _pipeline_walk(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *, steps: int,
                   rule: str, generator: torch.Generator | None, clip: bool, eps_scale,
                   on_step) -> torch.Tensor:
    """The diffusers scheduler's own loop (DDPMPipeline / DDIMPipeline with eta = 0): its
    set_timesteps and its step(), fed the network's raw output, so the chain, the float32
    arithmetic and the noise stream (randn_tensor on the CPU generator) are diffusers' own.
    With eps_scale the scaled eps is fed to an epsilon-predicting copy of the scheduler."""
    ddim = rule == "ddim"
    sched = schedule.diffusers_scheduler(ddim=ddim, clip=clip, epsilon=eps_scale is not None)
    sched.set_timesteps(steps)
    ts = [int(t) for t in sched.timesteps]
    for j, t in enumerate(ts):
        tt = _as_batch_t(t, x.shape[0], x.device)
        out = model(x, tt)
        if eps_scale is not None or on_step is not None:
            eps = schedule.eps_from_output(out, x, tt)
            if eps_scale is not None:
                out = eps = eps / eps_scale(t)
            if on_step is not None:
                on_step(SamplerStep(index=len(ts) - 1 - j, t=t, x_t=x, eps=eps))
        extra = {"eta": 0.0} if ddim else {}
        x = sched.step(out, t, x, generator=generator, **extra).prev_sample
    return x


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
    """Run flatgen's sampler from x at timestep ts[-1] down the ascending timesteps ts.

    The update rule of both samplers, each step going to the next entry of ts. final=True takes
    the last step to the data; final=False stops and returns x_{ts[0]} (chains that start or
    stop mid-way measure exposure bias). Gradients flow when the caller enables them (attacks
    through the sampler). The ADM sampler's per-step noise is drawn on the CPU from
    `generator`. clip=None clips the predicted x0 to [-1, 1] as the schedule's clip_sample says
    or, where that is None, for images (N, C, H, W), whose pixels live there, and not for vector
    data such as toy2d.
    """
    rule, _ = parse_sampler(sampler)
    if not ts or list(ts) != sorted(set(ts)):
        raise ValueError("ts must be a non-empty ascending list of distinct timesteps")
    pairs = [(ts[i], ts[i - 1] if i > 0 else -1)
             for i in reversed(range(0 if final else 1, len(ts)))]
    return _walk(model, schedule, x, pairs, rule, generator=generator,
                 clip=_clip(schedule, x, clip), eps_scale=eps_scale, on_step=on_step)


def _clip(schedule: NoiseSchedule, x: torch.Tensor, clip: bool | None) -> bool:
    if clip is not None:
        return clip
    return schedule.clip_sample if schedule.clip_sample is not None else x.ndim == 4


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
    rule, chain = parse_sampler(sampler)
    pairs = schedule.chain(steps, ddim=rule == "ddim", chain=chain)  # refuses bad step counts
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if x_T is None:
        x_T = torch.randn(shape, generator=generator)
    x_T = x_T.to(device, dtype)
    common = {"generator": generator, "clip": _clip(schedule, x_T, clip), "eps_scale": eps_scale,
              "on_step": on_step}
    if chain is None and schedule.pipeline is not None:
        return _pipeline_walk(model, schedule, x_T, steps=steps, rule=rule, **common)
    return _walk(model, schedule, x_T, pairs, rule, **common)
