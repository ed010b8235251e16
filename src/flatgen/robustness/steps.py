"""Sample quality versus the number of sampling steps T', for each sampler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, SamplerStep, sample
from flatgen.robustness._util import evaluating, make_generator

QualityFn = Callable[[torch.Tensor], dict[str, Any]]


@torch.no_grad()
def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    n: int,
    steps: int,
    sampler: str = "adm",
    seed: int = 0,
    batch_size: int = 256,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
) -> torch.Tensor:
    """n samples in batches, in eval mode. The same (seed, sampler, steps) gives the same x_T and
    sampler noise for every model, so models and their variants differ only by the weights."""
    g = make_generator(seed, "generate", sampler, steps)
    out = []
    with evaluating(model):
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            out.append(
                sample(
                    model,
                    schedule,
                    (b, *shape),
                    steps,
                    sampler,
                    generator=g,
                    clip=clip,
                    eps_scale=eps_scale,
                    on_step=on_step,
                )
            )
    return torch.cat(out)


def steps_sweep(
    model: nn.Module,
    schedule: NoiseSchedule,
    quality_fn: QualityFn,
    shape: tuple[int, ...],
    n: int,
    steps_list: Sequence[int] = (5, 10, 20, 50, 100),
    samplers: Sequence[str] = ("adm", "ddim"),
    seed: int = 0,
    batch_size: int = 256,
    on_step_for: dict[tuple[str, int], Callable[[SamplerStep], None]] | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """quality_fn(samples) for every sampler and T'. on_step_for[(sampler, steps)] taps a run
    (the suite records sampling-time eps norms there instead of sampling twice)."""
    out: dict[str, Any] = {}
    for sampler in samplers:
        rows: dict[str, list] = {"steps": [], "quality": []}
        for steps in steps_list:
            hook = (on_step_for or {}).get((sampler, steps))
            samples = generate(
                model, schedule, shape, n, steps, sampler, seed, batch_size, on_step=hook
            )
            rows["steps"].append(steps)
            rows["quality"].append(quality_fn(samples))
            if tick:
                tick()
        out[sampler] = rows
    return out
