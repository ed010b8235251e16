"""Batched, seeded generation of many samples: the one `generate` (evaluation, `flatgen sample`,
the study's pictures and the robustness sweeps all call it)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from flatgen.diffusion.samplers import SamplerStep, network_of, sample
from flatgen.diffusion.schedule import NoiseSchedule


@torch.no_grad()
def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    *,
    n: int,
    shape: tuple[int, ...],
    steps: int,
    sampler: str = "adm",
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    on_step: Callable[[SamplerStep], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """n samples of `shape` on the CPU, generated in batches in eval mode with `steps` network
    evaluations each.

    One CPU generator draws x_T and the sampler noise of every batch: `generator` if given, else
    one seeded once with `seed`, so the same seed gives the same samples for any batch size
    that splits n alike, on any device. clip, eps_scale and on_step go to `sample`; on_batch(b)
    is called after each batch of b samples (progress bars). compile: run the network through
    torch.compile (inductor): the same samples up to rounding, faster forwards
    once compiled, after tens of seconds of compiling per batch shape on a CPU
    (the compiled code is cached in memory and in inductor's cache folder,
    TORCHINDUCTOR_CACHE_DIR).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    model = network_of(model, schedule)  # the raw network: compiled, it stays recognisable
    # a fresh wrapper each call is cheap: dynamo keeps the compiled code of the forward
    net = torch.compile(model, backend="inductor") if compile else model
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            out.append(sample(net, schedule, (b, *shape), steps=steps, sampler=sampler,
                              generator=g, clip=clip, eps_scale=eps_scale, on_step=on_step).cpu())
            if on_batch is not None:
                on_batch(b)
    finally:
        model.train(was_training)
    return torch.cat(out)
