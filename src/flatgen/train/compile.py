"""torch.compile (inductor) for the training forward, with its cache in the run's folder.

train.compile None means "auto": on where the run trains on CUDA (1.2-1.4x there and on CPU
once compiled), off on the CPU, where compiling one shape of the digits U-Net costs about 36 s
and pays back only in long runs. The cache (TORCHINDUCTOR_CACHE_DIR, inductor's FX graph and
kernel caches) lives in RUN/.cache/inductor, so a resumed run loads the compiled kernels
instead of compiling again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

CACHE_DIR = ".cache/inductor"  # inside the run directory
_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_wanted(flag: bool | None, device: torch.device | str) -> bool:
    """The effective train.compile (or a sampling compile switch): None means on for CUDA, off
    elsewhere."""
    return torch.device(device).type == "cuda" if flag is None else bool(flag)


def compiler_missing() -> str | None:
    """Why inductor cannot compile for the CPU here (no C++ compiler), or None."""
    if any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return None
    return "torch.compile needs a C++ compiler (g++ or clang++) on the PATH for CPU kernels"


@contextmanager
def inductor_cache(folder: Path) -> Iterator[Path]:
    """Inductor's caches in `folder` while inside; the previous setting is restored after."""
    previous = os.environ.get(_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[_ENV] = str(folder.resolve())
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = previous


def compiled(model: nn.Module) -> nn.Module:
    """`model` compiled with inductor; it shares the parameters (its state_dict keys gain an
    `_orig_mod.` prefix, so checkpoints keep saving the model itself)."""
    return torch.compile(model, backend="inductor")
