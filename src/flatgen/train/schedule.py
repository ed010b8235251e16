"""The one learning-rate schedule of flatgen (diffusion training and classifiers alike), and a
keyword-only front to the one accelerator factory."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import Accelerator

LR_FLOOR = 0.1  # cosine decays to this fraction of the peak


def lr_factor(step: int, *, total: int, warmup: int = 0, decay: str = "cosine") -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based) of `total`.

    Linear warm-up over `warmup` steps ((step + 1) / warmup), then constant, or a cosine from
    1 down to LR_FLOOR over the remaining total - warmup steps.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    if decay != "cosine":
        raise ValueError(f"lr decay must be 'constant' or 'cosine', got {decay!r}")
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_lambda(*, total: int, warmup: int = 0, decay: str = "cosine") -> Callable[[int], float]:
    """lr_factor as a function of the step, for torch.optim.lr_scheduler.LambdaLR."""
    lr_factor(0, total=total, warmup=warmup, decay=decay)  # a bad `decay` fails here, not later
    return lambda step: lr_factor(step, total=total, warmup=warmup, decay=decay)


def make_accelerator(
    *, cpu: bool = False, mixed_precision: str | None = None, log_with: Any = None,
    project_dir: str | None = None,
) -> Accelerator:
    """An Accelerator on the GPU if there is one (and not `cpu`), else on the CPU.

    Accelerate only sets up multi-process CPU training (gloo) when told cpu=True, hence the
    explicit flag where no GPU exists. mixed_precision None leaves the choice to `accelerate
    launch` / `accelerate config` (ACCELERATE_MIXED_PRECISION). log_with / project_dir: its
    trackers (TensorBoard, W&B) and where they write.
    """
    import torch
    from accelerate import Accelerator

    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    kwargs = {} if mixed_precision is None else {"mixed_precision": mixed_precision}
    return Accelerator(cpu=cpu or no_gpu, log_with=log_with, project_dir=project_dir, **kwargs)
