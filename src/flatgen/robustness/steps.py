"""Seeded generation for the robustness suites: common random numbers across models, one
stream for the verdicts and a separate one for choosing the level a claim is judged at."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, SamplerStep, sample
from flatgen.diffusion import generate as diffusion_generate
from flatgen.robustness.util import evaluating, make_generator

# "verdict": the noise every reported value is measured on; "select": separate sampling noise
# on which a claim's level is chosen, so that the choice does not select on the outcome
STREAMS = ("verdict", "select")


def stream_generator(seed: int, stream: str, *parts: object) -> torch.Generator:
    """The generator of one noise stream; the verdict stream keeps the labels it always had."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    return make_generator(seed, *parts) if stream == "verdict" else make_generator(
        seed, *parts, stream
    )


@torch.no_grad()
def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    *,
    shape: tuple[int, ...],
    n: int,
    steps: int,
    sampler: str = "adm",
    seed: int = 0,
    stream: str = "verdict",
    batch_size: int = 256,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
) -> torch.Tensor:
    """n samples in batches, in eval mode, on the CPU (diffusion.generate). The same (seed,
    stream, sampler, steps) gives the same x_T and sampler noise for every model, so models and
    their variants differ only by the weights."""
    g = stream_generator(seed, stream, "generate", sampler, steps)
    return diffusion_generate(model, schedule, n=n, shape=shape, steps=steps, sampler=sampler,
                              generator=g, batch_size=batch_size, clip=clip, eps_scale=eps_scale,
                              on_step=on_step)


@torch.no_grad()
def generate_streams(
    model: nn.Module,
    schedule: NoiseSchedule,
    *,
    shape: tuple[int, ...],
    n: int,
    steps: int,
    streams: Sequence[str],
    seed: int = 0,
    batch_size: int = 256,
    on_step: Mapping[str, Callable[[SamplerStep], None]] | None = None,
) -> dict[str, torch.Tensor]:
    """DDIM samples of several noise streams in one stacked batch (cut into chunks of
    batch_size rows): stream -> n samples, each equal to generate(..., sampler="ddim",
    stream=stream) up to float rounding. DDIM draws nothing after x_T, so each stream's x_T is
    drawn from its own generator exactly as generate draws it, and the rows are stacked; the
    ADM sampler draws noise at every step from one generator per call, so its streams cannot
    share a call (that would need a generator per block of rows in flatgen.diffusion).
    on_step: stream -> callback, called with that stream's rows of each step."""
    starts = []
    for stream in streams:
        g = stream_generator(seed, stream, "generate", "ddim", steps)
        starts += [torch.randn((min(batch_size, n - i), *shape), generator=g)
                   for i in range(0, n, batch_size)]
    x_T = torch.cat(starts)
    owner = [stream for stream in streams for _ in range(n)]
    out = []
    with evaluating(model):
        dtype = next(model.parameters()).dtype
        for i in range(0, len(x_T), batch_size):
            rows = slice(i, min(i + batch_size, len(x_T)))
            split = None if not on_step else _split_steps(owner[rows], on_step)
            out.append(sample(model, schedule, tuple(x_T[rows].shape), steps=steps,
                              sampler="ddim", x_T=x_T[rows].to(dtype), on_step=split).cpu())
    samples = torch.cat(out)
    return {stream: samples[k * n:(k + 1) * n] for k, stream in enumerate(streams)}


def _split_steps(
    owner: list[str], on_step: Mapping[str, Callable[[SamplerStep], None]]
) -> Callable[[SamplerStep], None]:
    """An on_step that hands each stream's rows of a stacked step to that stream's callback."""
    spans: dict[str, slice] = {}
    for stream in dict.fromkeys(owner):
        first = owner.index(stream)
        spans[stream] = slice(first, first + owner.count(stream))

    def call(step: SamplerStep) -> None:
        for stream, rows in spans.items():
            if stream in on_step:
                on_step[stream](SamplerStep(index=step.index, t=step.t, x_t=step.x_t[rows],
                                            eps=step.eps[rows]))

    return call
