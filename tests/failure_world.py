"""The world the failure tests break: a trained toy run, a U-Net run and its export, config
files; and the ways they break it (corrupt files, injected OS errors, a diverging loss)."""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from flatgen.cli import app

TOY = {
    "data": {"name": "toy2d", "n_train": 256, "n_test": 64},
    "model": {"preset": "mlp2d"},
    "method": {"preset": "sam+ema"},
    "train": {"steps": 12, "batch_size": 16, "warmup_steps": 2, "log_every": 2, "ckpt_every": 5},
}
UNET = {"train": {"steps": 1, "batch_size": 4, "warmup_steps": 0}}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def world_template(tmp_path_factory, one_thread):
    """A toy run (sam+ema, checkpoints at 5, 10, 12), a U-Net run, its export; built once."""
    w = tmp_path_factory.mktemp("world")
    _write_yaml(w / "toy.yaml", TOY)
    _write_yaml(w / "unet.yaml", UNET)
    for name, cfg in (("run", "toy.yaml"), ("unet", "unet.yaml")):
        result = invoke("train", w / cfg, "--out", w / name, "--no-progress")
        assert result.exit_code == 0, result.output
    assert invoke("export", w / "unet", "--out", w / "export").exit_code == 0
    (w / "user").mkdir()
    (w / "user" / "notes.txt").write_text("mine\n")
    return w


_HELD: list[int] = []  # lock files a case holds (as another process would), closed after it


@pytest.fixture
def world(world_template, tmp_path, monkeypatch):
    monkeypatch.delenv("FLATGEN_DEBUG", raising=False)
    monkeypatch.delenv("FLATGEN_KILL_AT", raising=False)
    w = tmp_path / "w"
    shutil.copytree(world_template, w)
    yield w
    while _HELD:
        os.close(_HELD.pop())  # releases the flock


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- injected OS errors


def _deny_writes(monkeypatch, root: Path, code: int) -> None:
    """Every write under root fails with OSError(code), as on a read-only or full filesystem."""
    root_s = str(root)
    real_os_open, real_mkdir, real_open = os.open, os.mkdir, io.open

    def under(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root_s)

    def fail(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            fail(path)
        return real_os_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if under(path):
            fail(path)
        return real_mkdir(path, *a, **k)

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+") and under(file):
            fail(file)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(builtins, "open", open_)


def _disk_full_at_checkpoint(monkeypatch, step: int, *, rust: bool = False) -> None:
    """The disk fills up while checkpoint `step` is written. safetensors writes from Rust and
    reports it as a SafetensorError wrapping the OS error (rust=True), as a real full disk does:
    "Error while serializing: I/O error: No space left on device (os error 28) at path ..."."""
    from safetensors import SafetensorError

    from flatgen.train import checkpoint

    real = checkpoint.save_file

    def save_file_(tensors, path, *a, **k):
        if f"step-{step}-" in str(path):
            if rust:
                raise SafetensorError("Error while serializing: I/O error: No space left on "
                                      f"device (os error 28) at path \"{path}\"")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(checkpoint, "save_file", save_file_)


def _nan_loss_from_call(monkeypatch, call: int) -> None:
    """The training loss turns NaN from its `call`-th evaluation on (a diverging run)."""
    from flatgen.train import loop

    real, calls = loop.diffusion_loss, [0]

    def loss(*a, **k):
        calls[0] += 1
        value = real(*a, **k)
        return value * float("nan") if calls[0] >= call else value

    monkeypatch.setattr(loop, "diffusion_loss", loss)


def _hold_lock(monkeypatch, run: Path, pid: int) -> None:
    """Hold the run's lock as a training process `pid` does (another open file description
    conflicts with flock like another process)."""
    import fcntl

    from flatgen.io import RUN_LOCK

    fd = os.open(run / RUN_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    _HELD.append(fd)


# ---------------------------------------------------------------- world edits


def _set(w: Path, assignment: str) -> list:
    return ["train", w / "toy.yaml", "--out", w / "r", "--set", assignment]


def _pretrained(w: Path, **scheduler) -> list:
    """A copy of the export whose scheduler config holds `scheduler`, as model.pretrained."""
    shutil.copytree(w / "export", w / "pre")
    path = w / "pre" / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | scheduler))
    return ["train", _write_yaml(w / "p.yaml", {"model": {"pretrained": str(w / "pre")}}),
            "--out", w / "r"]


def _user_run_lookalike(w: Path) -> None:
    """A user's folder with a config.yaml, a metrics.jsonl and an eval/ of its own."""
    shutil.copy(w / "toy.yaml", w / "user" / "config.yaml")
    (w / "user" / "metrics.jsonl").write_text('{"step": 1}\n')
    (w / "user" / "eval").mkdir()
    (w / "user" / "eval" / "mine.json").write_text("{}\n")


def _hidden_only(w: Path) -> Path:
    """A folder holding only a user's hidden file (named like a temporary)."""
    (w / "h").mkdir()
    (w / "h" / ".x.tmp").write_text("mine\n")
    return w / "h"


def _corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x13garbage" * 50,
                      "empty": b""}[kind])


def _pickle_payload(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Payload()))


def _nan_weights(run: Path) -> None:
    for ckpt in (run / "checkpoints").iterdir():
        f = ckpt / "model.safetensors"
        tensors = load_file(f)
        first = next(iter(tensors))
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        f.unlink()  # `last` holds hard links: write a new file
        save_file(tensors, f)


def _image_folder(w: Path) -> Path:
    folder = w / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    return _write_yaml(w / "img.yaml", {
        "data": {"name": "image_folder", "path": str(folder), "image_size": 8, "channels": 1},
        "train": {"steps": 1, "batch_size": 2}})


def _cifar(w: Path, test_bytes: int) -> Path:
    folder = w / "cifar"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(bytes(3073))
    (folder / "test_batch.bin").write_bytes(bytes(test_bytes))
    return _write_yaml(w / "c.yaml", {"data": {"name": "cifar10", "path": str(folder)},
                                      "model": {"preset": "unet-adm32"}})


def _study(w: Path, steps: int) -> Path:
    """A study folder whose adm-s0 run was trained with 6 steps, and a study config of `steps`."""
    study = {"name": "s", "base": TOY | {"method": {}, "train": TOY["train"] | {"steps": steps}},
             "methods": ["adm"], "seeds": [0]}
    from flatgen.study import load_study_config
    from flatgen.study.config import unit_config

    path = _write_yaml(w / "study.yaml", study)
    old = unit_config(load_study_config(path), "adm", 0).model_copy(deep=True)
    old.train.steps = 6
    run = w / "S" / "runs" / "adm-s0"
    run.mkdir(parents=True)
    from flatgen.config import dump_config

    (run / "config.yaml").write_text(dump_config(old))
    (w / "S" / "status.json").write_text('{"adm-s0": "done"}\n')
    return path


def _fail_study_training(monkeypatch) -> None:
    import flatgen.study.diffusion as study_run  # the diffusion kind trains its units

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(study_run, "train", boom)


def _internal_bug(monkeypatch) -> None:
    import flatgen.open_model as open_module

    def broken(*a, **k):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(open_module, "open_model", broken)


# ---------------------------------------------------------------- extra checks after a case


def _strict_metrics(w: Path, run: str) -> None:
    for line in (w / run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict token {c}"))


def _kept_step(run: str, step: int) -> Callable[[Path], None]:
    def check(w: Path) -> None:
        from flatgen.train import checkpoint_step, latest_checkpoint

        ckpt = latest_checkpoint(w / run / "checkpoints")
        assert ckpt is not None and checkpoint_step(ckpt) == step
        assert all(torch.isfinite(v).all() for v in load_file(ckpt / "model.safetensors").values())
        assert not [p for p in (w / run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
        _strict_metrics(w, run)

    return check


def _nothing_saved(run: str) -> Callable[[Path], None]:
    def check(w: Path) -> None:
        assert not (w / run / "checkpoints").exists()
        _strict_metrics(w, run)

    return check


def _assert(ok: bool) -> None:
    assert ok


def _resume(w: Path) -> list:
    return ["train", w / "toy.yaml", "--out", w / "run", "--resume", "--set", "train.steps=20"]


def _legacy(ckpt: Path) -> None:
    """A checkpoint as flatgen wrote it before: trainer_state.pt (a pickle), no safetensors."""
    (ckpt / "trainer_state.safetensors").unlink()
    (ckpt / "trainer_state.pt").write_bytes(b"PK\x03\x04 a torch.save zip")
    for step_dir in (ckpt.parent).glob("step-*"):
        shutil.rmtree(step_dir)


def _damage_metrics(path: Path) -> None:
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
