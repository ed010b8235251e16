"""Small shared helpers: derived seeds, frozen parameters, eval mode, JSON-safe numbers.

Public: flatgen.classify uses them too (`evaluating`, `jsonable`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed from a base seed and labels (crc32, unlike hash(), is not salted)."""
    return zlib.crc32(repr((seed, *parts)).encode()) & 0x7FFFFFFF


def make_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded from derive_seed(seed, *parts)."""
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def evaluating(model: nn.Module, freeze: bool = False) -> Iterator[nn.Module]:
    """Eval mode for the duration; with freeze=True also requires_grad=False on all parameters
    (input gradients then skip the weight-gradient work). Both are restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    if freeze:
        model.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def jsonable(value: Any) -> Any:
    """Plain Python (dict/list/float/int/str/bool/None) from tensors, numpy values and containers.

    Non-finite floats become None, since JSON has no NaN or infinity.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist()) if value.ndim else jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
