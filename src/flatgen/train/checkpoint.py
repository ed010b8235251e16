"""Checkpoints: weights as safetensors, trainer state loadable with torch.load(weights_only=True).

A checkpoint is a folder (checkpoints/last/) written under a temporary name and renamed into
place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHT_NAMES = ("model", "ema", "swa")
STATE_FILE = "trainer_state.pt"


def state_dict_to_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(
    ckpt_dir: str | Path, weights: dict[str, nn.Module], state: dict[str, Any]
) -> Path:
    """Write weights (name -> module) and trainer state into ckpt_dir atomically."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{ckpt_dir.name}-", dir=ckpt_dir.parent))
    try:
        for name, module in weights.items():
            save_file(state_dict_to_cpu(module), tmp / f"{name}.safetensors")
        torch.save(state, tmp / STATE_FILE)
        (tmp / "trainer_state.json").write_text(
            json.dumps({"step": state.get("step"), "weights": sorted(weights)}, indent=2) + "\n"
        )
        old = ckpt_dir.parent / f".old-{ckpt_dir.name}"
        if ckpt_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(ckpt_dir, old)
        os.replace(tmp, ckpt_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt_dir


def find_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint folder, or the previous one if a crash happened between the two renames."""
    ckpt_dir = Path(ckpt_dir)
    for candidate in (ckpt_dir, ckpt_dir.parent / f".old-{ckpt_dir.name}"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_weights(ckpt_dir: str | Path, name: str = "model") -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / f"{name}.safetensors"
    if not path.is_file():
        available = sorted(p.stem for p in Path(ckpt_dir).glob("*.safetensors"))
        raise FileNotFoundError(
            f"no {name!r} weights in {str(ckpt_dir)!r} (available: {', '.join(available) or 'none'})"
        )
    return load_file(path)


def load_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt_dir) / STATE_FILE, weights_only=True, map_location="cpu")
