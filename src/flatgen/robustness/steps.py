"""Seeded generation for the robustness suites: common random numbers across models, one
stream for the verdicts and a separate one for choosing the level a claim is judged at."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, SamplerStep
from flatgen.diffusion import generate as diffusion_generate
from flatgen.robustness.util import make_generator

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
