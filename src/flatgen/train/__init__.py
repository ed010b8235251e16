"""Training: the Accelerate loop, the Method hook, checkpoints, and reading runs back.

Names are imported lazily so that `flatgen.train.step` (what DDP workers need) loads fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "checkpoint_at": "checkpoint",
    "checkpoint_step": "checkpoint",
    "find_checkpoint": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "load_trainer_state": "checkpoint",
    "load_weights": "checkpoint",
    "save_checkpoint": "checkpoint",
    "step_checkpoints": "checkpoint",
    "RunDirError": "rundir",
    "TrainResult": "loop",
    "train": "loop",
    "Method": "method",
    "WEIGHTS_CHOICES": "run",
    "Run": "run",
    "RunNotFoundError": "run",
    "load_run": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flatgen.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flatgen.train.{_EXPORTS[name]}"), name)
