"""Samplers with T' steps out of T, as registered functions: ADM's stochastic respaced sampler
and DDIM (eta = 0), each one function of one signature (as in k-diffusion's sampling.py).

Every sampler walks (t, t_prev) pairs, t descending (`schedule.chain`; t_prev = -1 steps to the
data), feeds the *original* timestep to the network, and clips the predicted x0 to [-1, 1] as
ADM does (images only: toy 2-D data lives outside that box). Adding a sampler is a function

    def sample_x(model, schedule, x, *, pairs, generator, clip, eps_scale, on_step) -> x

(`predict` gives each step's eps and x0 and calls on_step) and its registration,
`SAMPLER_RULES.register("x", Sampler(sample_x))`; it is then a name `sample`, `generate`, the CLI
and the robustness suites take ("x" and "x-respaced").

Timestep chains (schedule.chain). flatgen's own runs walk `schedule.respaced(N)`: N timesteps
evenly spaced from 0 to T-1 and rounded, each step going to the next entry; diffusers'
DDPMScheduler walks that chain with timestep_spacing="linspace" (what `flatgen export` writes).
A schedule read from a diffusers scheduler config walks, by default, that scheduler's own chain:
diffusers' set_timesteps (its spacing, "leading" by default, and steps_offset). A sampler that
names its diffusers scheduler (`Sampler.scheduler`: adm is DDPMScheduler, ddim DDIMScheduler)
runs that scheduler's own step() there, so `sample` reproduces DDPMPipeline and
DDIMPipeline(eta=0) from the same generator seed (x_T and the per-step noise are drawn as
torch.randn on the CPU generator, the stream diffusers' randn_tensor draws); any other sampler
walks the DDPM chain's pairs with its own rule. The "-respaced" names keep flatgen's chain on
any model.

A network that predicts v or x0 (schedule.prediction_type) is read through
schedule.eps_from_output, so every sampler and on_step see eps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from flatgen.diffusion.schedule import EpsilonModel, NoiseSchedule
from flatgen.registry import Registry

RESPACED = "-respaced"  # the suffix that keeps flatgen's respaced chain on any model


@dataclass
class SamplerStep:
    """What one sampling step saw: the input x_t, its timestep, and the predicted noise."""

    index: int
    t: int
    x_t: torch.Tensor
    eps: torch.Tensor


OnStep = Callable[[SamplerStep], None]


class SamplerFn(Protocol):
    """One signature for every sampler: x after walking `pairs` ((t, t_prev), t descending;
    t_prev < 0: to the data, abar = 1). The step of pairs[j] reports index len(pairs) - 1 - j
    to on_step; stochastic samplers draw their noise on the CPU from `generator`."""

    def __call__(self, model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *,
                 pairs: Sequence[tuple[int, int]], generator: torch.Generator | None,
                 clip: bool, eps_scale: Callable[[int], float] | None,
                 on_step: OnStep | None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its update rule, and the diffusers scheduler whose own step() it
    is on a pipeline model's chain (None: the rule walks that chain's DDPM pairs itself)."""

    fn: SamplerFn
    scheduler: Literal["ddpm", "ddim"] | None = None


SAMPLER_RULES: Registry[Sampler] = Registry("sampler")


def register_sampler(name: str, *, scheduler: Literal["ddpm", "ddim"] | None = None
                     ) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator: register `fn` as the sampler `name` (and `name`-respaced)."""

    def deco(fn: SamplerFn) -> SamplerFn:
        SAMPLER_RULES.register(name, Sampler(fn, scheduler))
        return fn

    return deco


class _SamplerNames(Sequence[str]):
    """Every sampler name, live from the registry: each rule, then each rule + "-respaced"."""

    def _names(self) -> tuple[str, ...]:
        rules = SAMPLER_RULES.names()
        return (*rules, *(r + RESPACED for r in rules))

    def __getitem__(self, i):  # type: ignore[override]
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())


# "adm" and "ddim" walk the model's own chain (a diffusers model's scheduler, else flatgen's
# respaced chain); the "-respaced" names always walk flatgen's respaced chain
SAMPLERS: Sequence[str] = _SamplerNames()


def parse_sampler(sampler: str) -> tuple[str, str | None]:
    """(update rule, chain) of a sampler name: "adm" -> ("adm", None), "ddim-respaced" ->
    ("ddim", "respaced"); chain None is the schedule's own."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if sampler in SAMPLER_RULES:
        return sampler, None
    return sampler.removesuffix(RESPACED), RESPACED[1:]


def network_of(model: nn.Module, schedule: NoiseSchedule) -> nn.Module:
    """The network whose outputs schedule.prediction_type describes. The samplers read every
    output through schedule.eps_from_output (and a pipeline's scheduler reads it raw), so the
    eps view of a v- or x0-predictor (as_epsilon_model, what the robustness suites hold) is
    unwrapped: read again as v it would be a wrong eps."""
    if isinstance(model, EpsilonModel) and schedule.prediction_type != "epsilon":
        if model.schedule.prediction_type != schedule.prediction_type:
            raise ValueError(f"an eps view of a {model.schedule.prediction_type} model cannot "
                             f"be sampled with a {schedule.prediction_type} schedule")
        return model.model
    return model


def _as_batch_t(t: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.full((n,), t, device=device, dtype=torch.long)


def abar_at(schedule: NoiseSchedule, t: int) -> float:
    """abar_t as a float; 1 for t < 0 (the data)."""
    return schedule.alphas_cumprod[t].item() if t >= 0 else 1.0


def predict(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *, t: int, index: int,
            clip: bool, eps_scale: Callable[[int], float] | None,
            on_step: OnStep | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) of one step: the network's noise at (x, t) read through eps_from_output and
    divided by eps_scale(t) (ADM-ES), reported to on_step, and the x0 it implies,
    x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Ho et al. 2020, Eq. 4 solved for x0),
    clipped to [-1, 1] when clip."""
    a_t = schedule.alphas_cumprod[t].item()
    tt = _as_batch_t(t, x.shape[0], x.device)
    eps = schedule.eps_from_output(model(x, tt), x, tt)
    if eps_scale is not None:
        eps = eps / eps_scale(t)
    if on_step is not None:
        on_step(SamplerStep(index=index, t=t, x_t=x, eps=eps))
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return eps, x0.clamp(-1, 1) if clip else x0


@register_sampler("adm", scheduler="ddpm")
def sample_adm(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *,
               pairs: Sequence[tuple[int, int]], generator: torch.Generator | None,
               clip: bool, eps_scale: Callable[[int], float] | None,
               on_step: OnStep | None) -> torch.Tensor:
    """ADM's stochastic sampler: ancestral sampling (Ho et al. 2020, Alg. 2) on a respaced
    chain (Nichol & Dhariwal 2021, Sec. 4: beta_i = 1 - abar_t / abar_prev), x_prev the
    posterior mean from the clipped x0 (Ho et al. Eq. 7) plus noise of the posterior variance
    beta~ ("fixed small"); no noise on the step to the data."""
    for j, (t, prev) in enumerate(pairs):
        a_t, a_prev = abar_at(schedule, t), abar_at(schedule, prev)
        _, x0 = predict(model, schedule, x, t=t, index=len(pairs) - 1 - j, clip=clip,
                        eps_scale=eps_scale, on_step=on_step)
        beta = 1 - a_t / a_prev
        coef_x0 = beta * a_prev**0.5 / (1 - a_t)
        coef_xt = (1 - a_prev) * (1 - beta) ** 0.5 / (1 - a_t)
        x = coef_x0 * x0 + coef_xt * x
        if prev >= 0:
            var = beta * (1 - a_prev) / (1 - a_t)  # posterior variance ("fixed small")
            noise = torch.randn(tuple(x.shape), generator=generator).to(x.device, x.dtype)
            x = x + var**0.5 * noise
    return x


@register_sampler("ddim", scheduler="ddim")
def sample_ddim(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *,
                pairs: Sequence[tuple[int, int]], generator: torch.Generator | None,
                clip: bool, eps_scale: Callable[[int], float] | None,
                on_step: OnStep | None) -> torch.Tensor:
    """DDIM with eta = 0 (Song et al. 2021, Eq. 12 with sigma_t = 0):
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps, deterministic (draws nothing), with
    eps re-derived from the clipped x0 as ADM does."""
    for j, (t, prev) in enumerate(pairs):
        a_t, a_prev = abar_at(schedule, t), abar_at(schedule, prev)
        _, x0 = predict(model, schedule, x, t=t, index=len(pairs) - 1 - j, clip=clip,
                        eps_scale=eps_scale, on_step=on_step)
        eps_hat = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps_hat
    return x


def _pipeline_walk(model: nn.Module, schedule: NoiseSchedule, x: torch.Tensor, *, steps: int,
                   ddim: bool, span: slice, generator: torch.Generator | None, clip: bool,
                   eps_scale: Callable[[int], float] | None,
                   on_step: OnStep | None) -> torch.Tensor:
    """The diffusers scheduler's own loop (DDPMPipeline / DDIMPipeline with eta = 0) over the
    steps `span` of its chain: its set_timesteps and its step(), fed the network's raw output,
    so the chain, the float32 arithmetic and the noise stream (randn_tensor on the CPU
    generator) are diffusers' own. With eps_scale the scaled eps is fed to an
    epsilon-predicting copy of the scheduler."""
    sched = schedule.diffusers_scheduler(ddim=ddim, clip=clip, epsilon=eps_scale is not None)
    sched.set_timesteps(steps)
    ts = [int(t) for t in sched.timesteps]
    for j in range(*span.indices(len(ts))):
        t = ts[j]
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


def sampler_chain(schedule: NoiseSchedule, steps: int, sampler: str) -> list[tuple[int, int]]:
    """The (t, t_prev) pairs, t descending, that `sampler` walks with `steps` steps on
    `schedule` (its diffusers scheduler's chain on a pipeline model, unless -respaced)."""
    rule, chain = parse_sampler(sampler)
    return schedule.chain(steps, ddim=SAMPLER_RULES[rule].scheduler == "ddim", chain=chain)


def run_sampler(
    model: nn.Module,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    *,
    steps: int,
    sampler: str = "adm",
    span: slice | None = None,
    generator: torch.Generator | None = None,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: OnStep | None = None,
) -> torch.Tensor:
    """The sampler's walk from x down its chain (sampler_chain), as `sample` runs it, with
    gradients where the caller enables them (attacks on x_T).

    span: the steps to walk, as indices into sampler_chain's pairs (default all): x is then at
    pairs[span.start][0] and the result at pairs[span.stop - 1][1] (chains that start or stop
    mid-way measure exposure bias). clip as in `sample`.
    """
    rule, chain = parse_sampler(sampler)
    entry = SAMPLER_RULES[rule]
    pairs = sampler_chain(schedule, steps, sampler)  # refuses bad step counts
    model = network_of(model, schedule)
    span = span if span is not None else slice(None)
    common = {"generator": generator, "clip": _clip(schedule, x, clip), "eps_scale": eps_scale,
              "on_step": on_step}
    if chain is None and schedule.pipeline is not None and entry.scheduler is not None:
        return _pipeline_walk(model, schedule, x, steps=steps, ddim=entry.scheduler == "ddim",
                              span=span, **common)
    if span == slice(None):
        return entry.fn(model, schedule, x, pairs=pairs, **common)
    sub = pairs[span]
    if on_step is not None:  # a sub-chain's steps keep their index on the whole chain
        tail = len(pairs) - len(sub) - span.indices(len(pairs))[0]

        def shifted(s: SamplerStep) -> None:
            on_step(SamplerStep(index=s.index + tail, t=s.t, x_t=s.x_t, eps=s.eps))

        common["on_step"] = shifted
    return entry.fn(model, schedule, x, pairs=sub, **common)


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
    on_step: OnStep | None = None,
    final: bool = True,
) -> torch.Tensor:
    """Run a sampler's update rule from x at timestep ts[-1] down the ascending timesteps ts
    (flatgen's pairs: each step going to the next entry of ts, whatever the schedule).

    final=True takes the last step to the data; final=False stops and returns x_{ts[0]}.
    Gradients flow when the caller enables them. clip as in `sample`.
    """
    rule, _ = parse_sampler(sampler)
    if not ts or list(ts) != sorted(set(ts)):
        raise ValueError("ts must be a non-empty ascending list of distinct timesteps")
    pairs = [(ts[i], ts[i - 1] if i > 0 else -1)
             for i in reversed(range(0 if final else 1, len(ts)))]
    return SAMPLER_RULES[rule].fn(network_of(model, schedule), schedule, x, pairs=pairs,
                                  generator=generator, clip=_clip(schedule, x, clip),
                                  eps_scale=eps_scale, on_step=on_step)


def _clip(schedule: NoiseSchedule, x: torch.Tensor, clip: bool | None) -> bool:
    """clip=None clips the predicted x0 to [-1, 1] as the schedule's clip_sample says or, where
    that is None, for images (N, C, H, W), whose pixels live there, and not for vector data."""
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
    on_step: OnStep | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Generate shape[0] samples with `steps` network evaluations.

    x_T and the sampler's per-step noise come from `generator` on the CPU, so a seed gives the
    same samples on any device. eps_scale(t) divides the predicted noise (ADM-ES epsilon scaling).
    on_step, if given, is called with every step's input and prediction (exposure-bias metrics).
    """
    sampler_chain(schedule, steps, sampler)  # refuses bad names and step counts before drawing
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if x_T is None:
        x_T = torch.randn(shape, generator=generator)
    x_T = x_T.to(device, dtype)
    return run_sampler(model, schedule, x_T, steps=steps, sampler=sampler, generator=generator,
                       clip=clip, eps_scale=eps_scale, on_step=on_step)
