"""Checkpoints: weights and trainer state as safetensors plus JSON; no pickle anywhere.

A checkpoint is a folder written under a temporary name (checkpoints/.tmp-<name>-XXXX) and
renamed into place, so a crash mid-write leaves the previous checkpoint intact:

  model.safetensors, ema.safetensors, swa.safetensors   the weights
  trainer_state.safetensors                             optimizer moments, RNG state, ...
  trainer_state.json                                    step, weights, and the state's structure

Training keeps a history checkpoints/step-<n> of the last K checkpoints and checkpoints/last,
the newest (hard links to the files of its step-<n>, so it costs no space).
Runs written before this format have trainer_state.pt (a pickle): their weights are still
read, their trainer state is not (they can be analysed, not resumed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flatgen.errors import CheckpointError
from flatgen.io import dir_mode, file_mode
from flatgen.train.killpoints import kill_point
from flatgen.train.state import decode_state, encode_state

WEIGHT_NAMES = ("model", "ema", "swa")
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
LEGACY_STATE = "trainer_state.pt"  # flatgen before the safetensors trainer state
STATE_FORMAT = "flatgen-trainer-state/1"
_STEP_DIR = re.compile(r"step-(\d+)")


def state_dict_to_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def _swap_into(tmp: Path, dst: Path) -> None:
    """Rename the finished folder tmp onto dst; the old dst survives as .old-<name> meanwhile."""
    old = dst.parent / f".old-{dst.name}"
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def _new_temporary(ckpt_dir: Path) -> Path:
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{ckpt_dir.name}-", dir=ckpt_dir.parent))
    os.chmod(tmp, dir_mode())  # mkdtemp makes it private (0700); outputs follow the umask
    return tmp


def save_checkpoint(
    ckpt_dir: str | Path, weights: dict[str, nn.Module], state: dict[str, Any]
) -> Path:
    """Write weights (name -> module) and trainer state into ckpt_dir atomically."""
    ckpt_dir = Path(ckpt_dir)
    tree, tensors = encode_state(state)  # a TypeError here writes nothing
    tmp = _new_temporary(ckpt_dir)
    try:
        for name, module in weights.items():
            save_file(state_dict_to_cpu(module), tmp / f"{name}.safetensors")
        kill_point("checkpoint-write", state.get("step"))
        save_file(tensors, tmp / STATE_TENSORS)
        meta = {"format": STATE_FORMAT, "step": state.get("step"), "weights": sorted(weights),
                "state": tree}
        (tmp / STATE_JSON).write_text(json.dumps(meta, allow_nan=False) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, file_mode())
        _swap_into(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt_dir


def _complete(folder: Path) -> bool:
    has_state = (folder / STATE_JSON).is_file() and (folder / STATE_TENSORS).is_file()
    return has_state or (folder / LEGACY_STATE).is_file()


def find_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint folder, or the previous one if a crash happened between the two renames."""
    ckpt_dir = Path(ckpt_dir)
    for candidate in (ckpt_dir, ckpt_dir.parent / f".old-{ckpt_dir.name}"):
        if _complete(candidate):
            return candidate
    return None


def checkpoint_step(ckpt: str | Path) -> int:
    """The step a checkpoint was written at, from its JSON sidecar."""
    path = Path(ckpt) / STATE_JSON
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{str(path)!r} is unreadable or holds no step: the checkpoint is "
                              "damaged; resume from another one with --resume-from") from None


def load_weights(ckpt_dir: str | Path, name: str = "model") -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / f"{name}.safetensors"
    if not path.is_file():
        available = sorted(p.stem for p in Path(ckpt_dir).glob("*.safetensors")
                           if p.stem in WEIGHT_NAMES)
        raise FileNotFoundError(
            f"no {name!r} weights in {str(ckpt_dir)!r} "
            f"(available: {', '.join(available) or 'none'})"
        )
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        reason = str(err).strip().splitlines()[0][:80] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({reason}): "
                              "restore it from a copy or retrain the run") from None


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError if any floating-point tensor holds NaN or an infinity."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{str(path)!r} holds non-finite weights (NaN/inf, in {bad[0]}): "
                              "the run diverged; retrain it with a smaller train.lr")


def load_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """The trainer state saved with a checkpoint, read with json and safetensors only."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_TENSORS).is_file() and (ckpt_dir / LEGACY_STATE).is_file():
        raise CheckpointError(
            f"{str(ckpt_dir)!r} was written by an older flatgen (trainer_state.pt, a pickle, which "
            "is no longer read): its weights can be analysed, but the run cannot be resumed")
    try:
        meta = json.loads((ckpt_dir / STATE_JSON).read_text())
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ValueError("unknown format")
        tensors = load_file(ckpt_dir / STATE_TENSORS)
        state = decode_state(meta["state"], tensors)
    except Exception:  # noqa: BLE001 - json, safetensors and a damaged structure alike
        raise CheckpointError(
            f"the trainer state in {str(ckpt_dir)!r} is unreadable (truncated or not written by "
            "flatgen): restore it, or resume from another checkpoint with --resume-from"
        ) from None
    if not isinstance(state, dict) or state.get("step") != meta.get("step"):
        raise CheckpointError(f"the trainer state in {str(ckpt_dir)!r} is inconsistent: "
                              "resume from another checkpoint with --resume-from")
    return state


# ---------------------------------------------------------------- history: step-<n> and last


def step_checkpoints(root: str | Path) -> dict[int, Path]:
    """step -> folder of the complete checkpoints/step-<n> folders under root."""
    root = Path(root)
    found = {}
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.fullmatch(p.name)
            if m and _complete(p):
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under root (checkpoints/): `last` or a step-<n>."""
    root = Path(root)
    candidates = list(step_checkpoints(root).values())
    last = find_checkpoint(root / "last")
    if last is not None:
        candidates.insert(0, last)  # on a tie, `last` (it may be the only one of an old run)
    best, best_step = None, -1
    for c in candidates:
        try:
            step = checkpoint_step(c)
        except CheckpointError:
            continue
        if step > best_step:
            best, best_step = c, step
    return best


def checkpoint_at(root: str | Path, step: int) -> Path:
    """The checkpoint of a given step (for --resume-from); CheckpointError lists the others."""
    root = Path(root)
    history = step_checkpoints(root)
    if step in history:
        return history[step]
    last = find_checkpoint(root / "last")
    if last is not None and checkpoint_step(last) == step:
        return last
    steps = sorted(set(history) | ({checkpoint_step(last)} if last is not None else set()))
    shown = ", ".join(map(str, steps)) or "none"
    raise CheckpointError(f"no checkpoint of step {step} in {str(root)!r} (steps saved: {shown}): "
                          "pass one of those to --resume-from")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def commit_checkpoint(
    root: str | Path, weights: dict[str, nn.Module], state: dict[str, Any], *, keep: int
) -> Path:
    """Write checkpoints/step-<n>, point checkpoints/last at it, keep the newest `keep` step-<n>."""
    root = Path(root)
    step = int(state["step"])
    step_dir = save_checkpoint(root / f"step-{step}", weights, state)
    kill_point("checkpoint-link", step)
    tmp = _new_temporary(root / "last")
    try:
        for f in step_dir.iterdir():
            _link_or_copy(f, tmp / f.name)
        _swap_into(tmp, root / "last")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list(step_checkpoints(root))[: max(0, len(step_checkpoints(root)) - keep)]:
        shutil.rmtree(root / f"step-{old}", ignore_errors=True)
    return root / "last"


def discard_after(root: str | Path, step: int) -> list[int]:
    """Remove the checkpoints newer than `step` (resuming from an earlier one); their steps."""
    root = Path(root)
    gone = [s for s in step_checkpoints(root) if s > step]
    for s in gone:
        shutil.rmtree(root / f"step-{s}")
    last = find_checkpoint(root / "last")
    if last is not None and checkpoint_step(last) > step:
        gone = sorted(set(gone) | {checkpoint_step(last)})
        shutil.rmtree(last)
    return gone


def remove_stale_checkpoint_temporaries(root: str | Path) -> list[Path]:
    """Delete what a killed checkpoint write left: .tmp-* folders, and .old-<name> beside <name>."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            stale_old = p.name.startswith(".old-") and (root / p.name[len(".old-"):]).exists()
            if p.is_dir() and (p.name.startswith(".tmp-") or stale_old):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed
