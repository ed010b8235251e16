"""Trainer state without pickle: tensors into safetensors, the rest into JSON.

A nested state (dicts, lists, tuples, numbers, strings, None and tensors, as optimizer, LR
scheduler, GradScaler and EMA/SWA state_dicts are) is split into a JSON tree in which each
tensor is replaced by a reference {"__tensor__": "t<i>"}, and a flat name -> tensor mapping
that safetensors stores. Decoding needs no unpickler: only json.loads and safetensors.
Dict keys that are not strings (an optimizer's parameter indices), tuples and non-finite floats
get tagged forms, so that decode(encode(x)) == x exactly, types included.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_TAGS = ("__tensor__", "__tuple__", "__items__", "__float__")


def encode_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-ready tree, tensors) for a nested state; TypeError names anything unsupported."""
    tensors: dict[str, torch.Tensor] = {}
    return _encode(state, tensors, "state"), tensors


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                              for k, v in obj.items()]}
    raise TypeError(f"cannot store {type(obj).__name__} at {where} in a checkpoint")


def decode_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The nested state that encode_state split; ValueError if the two parts do not match."""
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1 and next(iter(tree)) in _TAGS:
        tag, value = next(iter(tree.items()))
        if tag == "__tensor__":
            if value not in tensors:
                raise ValueError(f"tensor {value!r} is missing")
            return tensors[value]
        if tag == "__tuple__":
            return tuple(decode_state(v, tensors) for v in value)
        if tag == "__float__":
            return float(value)
        return {_hashable(decode_state(k, tensors)): decode_state(v, tensors) for k, v in value}
    return {k: decode_state(v, tensors) for k, v in tree.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
