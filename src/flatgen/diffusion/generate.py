"""Batched, seeded generation of many samples (what evaluation and `flatgen sample` call)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flatgen.diffusion.samplers import sample
from flatgen.diffusion.schedule import NoiseSchedule


def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    sample_shape: tuple[int, ...],
    steps: int,
    sampler: str = "adm",
    seed: int = 0,
    batch_size: int = 512,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """n samples on the CPU, generated in batches; one generator seeded once, so same seed = same samples."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        out.append(sample(model, schedule, (b, *sample_shape), steps, sampler, generator=g).cpu())
        if on_batch is not None:
            on_batch(b)
    return torch.cat(out)
