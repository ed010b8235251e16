"""Every failure ends in one clear line and loses nothing (issue 13), as a table of cases.

Each case builds a world (a trained toy run, a U-Net run and its export, config files), breaks
something, runs one command in-process and checks: the exit code (2: input refused before any
work; 1: failure at run time), stderr of at most 2 lines with no traceback, the message, and
the sha256 of every file that existed before, unchanged. Exit-2 cases also create no file.
Read-only filesystems and full disks are injected as OSErrors (the tests run as root).

The kill tests at the end fork a training process that FLATGEN_KILL_AT kills at a fixed point
(os._exit, like kill -9), restart it with --resume, and compare with an uninterrupted run.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from flatgen.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {
    "data": {"name": "toy2d", "n_train": 256, "n_test": 64},
    "model": {"preset": "mlp2d"},
    "method": {"preset": "sam+ema"},
    "train": {"steps": 12, "batch_size": 16, "warmup_steps": 2, "log_every": 2, "ckpt_every": 5},
    "eval": {"steps": [3], "samplers": ["ddim"], "n_samples": 32},
}
UNET = {"train": {"steps": 1, "batch_size": 4, "warmup_steps": 0}}


def _invoke(*args):
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
        result = _invoke("train", w / cfg, "--out", w / name, "--no-progress")
        assert result.exit_code == 0, result.output
    assert _invoke("export", w / "unet", "--out", w / "export").exit_code == 0
    (w / "user").mkdir()
    (w / "user" / "notes.txt").write_text("mine\n")
    return w


@pytest.fixture
def world(world_template, tmp_path, monkeypatch):
    monkeypatch.delenv("FLATGEN_DEBUG", raising=False)
    monkeypatch.delenv("FLATGEN_KILL_AT", raising=False)
    w = tmp_path / "w"
    shutil.copytree(world_template, w)
    return w


def _snapshot(root: Path) -> dict[str, str]:
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


def _disk_full_at_checkpoint(monkeypatch, step: int) -> None:
    """The disk fills up while checkpoint `step` is written (safetensors writes from Rust)."""
    from flatgen.train import checkpoint

    real = checkpoint.save_file

    def save_file_(tensors, path, *a, **k):
        if f"step-{step}-" in str(path):
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


# ---------------------------------------------------------------- world edits


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
    import flatgen.study.run as study_run

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(study_run, "train", boom)


def _internal_bug(monkeypatch) -> None:
    import flatgen.train.run as run_module

    def broken(*a, **k):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(run_module, "load_run", broken)


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


# ---------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    setup: Callable  # (world, monkeypatch) -> command line
    code: int
    message: str  # a regex the error line must match
    writes: bool = False  # a run-time failure may have written files (never changed old ones)
    after: Callable[[Path], None] | None = None


def _c(id, setup, code, message, **kw):
    return Case(id, setup, code, message, **kw)


RUN_CKPT = "run/checkpoints/last"
CASES = [
    # ---- config files and option values
    _c("config-missing", lambda w, m: ["train", w / "nope.yaml"], 2, r"'.*nope.yaml' not found"),
    _c("config-is-folder", lambda w, m: ["train", w / "user"], 2, r"is a folder"),
    _c("config-empty", lambda w, m: ["train", _text(w / "e.yaml", "# nothing\n"), "--out", w / "r"],
       2, r"'.*e.yaml' is empty"),
    _c("config-invalid-yaml", lambda w, m: ["train", _text(w / "b.yaml", "a: [\n"), "--out",
                                            w / "r"], 2, r"is not valid YAML"),
    _c("config-not-mapping", lambda w, m: ["train", _write_yaml(w / "l.yaml", [1, 2]),
                                           "--out", w / "r"], 2, r"must hold a mapping"),
    _c("config-unknown-key", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r", "--set",
                                           "train.nope=3"], 2, r"train\.nope: unknown key"),
    _c("config-lr-inf", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r", "--set",
                                      "train.lr=.inf"], 2, r"train\.lr: .*finite"),
    _c("config-lr-negative", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r", "--set",
                                           "train.lr=-1"], 2, r"train\.lr"),
    _c("config-set-without-equals", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r",
                                                  "--set", "train.lr"], 2, r"--set expects"),
    _c("option-missing-argument", lambda w, m: ["train"], 2, r"Missing argument 'config'"),
    _c("option-unknown-command", lambda w, m: ["trian"], 2, r"No such command 'trian'"),
    _c("option-sample-steps-0", lambda w, m: ["sample", w / "run", "--steps", "0"], 2,
       r"Invalid value for '--steps'"),
    _c("option-evaluate-steps-0", lambda w, m: ["evaluate", w / "run", "--steps", "0"], 2,
       r"--steps must be positive"),
    _c("option-not-a-number", lambda w, m: ["sample", w / "run", "--n", "many"], 2,
       r"Invalid value for '--n'"),
    _c("option-bad-sampler", lambda w, m: ["sample", w / "run", "--sampler", "euler"], 2,
       r"--sampler must be from"),
    _c("option-missing-weights", lambda w, m: ["sample", w / "run", "--weights", "swa"], 2,
       r"has no 'swa' weights"),
    # ---- data
    _c("data-cifar-missing", lambda w, m: ["train", _write_yaml(w / "c.yaml", {
        "data": {"name": "cifar10", "path": str(w / "nowhere")},
        "model": {"preset": "unet-adm32"}}),
        "--out", w / "r"], 2, r"CIFAR-10 not found"),
    _c("data-cifar-empty-file", lambda w, m: ["train", _cifar(w, 0), "--out", w / "r"], 2,
       r"test_batch.bin' is empty"),
    _c("data-cifar-truncated", lambda w, m: ["train", _cifar(w, 3073 + 7), "--out", w / "r"], 2,
       r"test_batch.bin' is truncated"),
    _c("data-corrupt-image", lambda w, m: ["train", _image_folder(w), "--out", w / "r"], 2,
       r"1 unreadable image file\(s\): broken.png"),
    # ---- train output paths
    _c("train-out-is-file", lambda w, m: ["train", w / "toy.yaml", "--out", w / "toy.yaml"], 2,
       r"is a file, not a folder"),
    _c("train-out-user-folder", lambda w, m: ["train", w / "toy.yaml", "--out", w / "user"], 2,
       r"not empty and holds no flatgen run.*--force"),
    _c("train-out-read-only", lambda w, m: (_deny_writes(m, w, errno.EROFS),
                                            ["train", w / "toy.yaml", "--out", w / "ro"])[1], 2,
       r"cannot write to .*Read-only file system"),
    _c("train-out-permission", lambda w, m: (
        _deny_writes(m, w / "user", errno.EACCES),
        ["train", w / "toy.yaml", "--out", w / "user" / "r"])[1], 2,
       r"cannot write to .*Permission denied"),
    _c("train-existing-run", lambda w, m: ["train", w / "toy.yaml", "--out", w / "run"], 2,
       r"already holds a run: pass --resume"),
    _c("train-stopped-early-run", lambda w, m: (shutil.rmtree(w / "run" / "checkpoints"),
                                                ["train", w / "toy.yaml", "--out", w / "run"])[1],
       2, r"stopped before its first checkpoint: pass --resume"),
    _c("resume-nothing", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r", "--resume"], 2,
       r"nothing to resume"),
    _c("resume-and-force", lambda w, m: ["train", w / "toy.yaml", "--out", w / "run", "--resume",
                                         "--force"], 2, r"cannot be combined with --resume"),
    # ---- resume state: refused, and the run stays byte-identical
    _c("resume-fewer-steps", lambda w, m: ["train", w / "toy.yaml", "--out", w / "run", "--resume",
                                           "--set", "train.steps=8"], 2,
       r"at step 12 with train.steps=8, fewer than done"),
    _c("resume-other-lr", lambda w, m: ["train", w / "toy.yaml", "--out", w / "run", "--resume",
                                        "--set", "train.steps=20", "--set", "train.lr=0.5"], 2,
       r"cannot change train.lr"),
    _c("resume-garbage-state", lambda w, m: (_corrupt(w / RUN_CKPT / "trainer_state.safetensors",
                                                      "garbage"), _resume(w))[1], 2,
       r"trainer state in .* is unreadable"),
    _c("resume-garbage-state-json", lambda w, m: (_corrupt(w / RUN_CKPT / "trainer_state.json",
                                                           "truncated"), _resume(w))[1], 2,
       r"is unreadable or holds no step"),
    _c("resume-truncated-weights", lambda w, m: (_corrupt(w / RUN_CKPT / "model.safetensors",
                                                          "truncated"), _resume(w))[1], 2,
       r"model.safetensors' is not a readable safetensors file"),
    _c("resume-pickle-weights", lambda w, m: (_pickle_payload(w / RUN_CKPT / "ema.safetensors",
                                                              w / "pwned"), _resume(w))[1], 2,
       r"ema.safetensors' is not a readable safetensors file",
       after=lambda w: _assert(not (w / "pwned").exists())),
    _c("resume-legacy-pickle-state", lambda w, m: (_legacy(w / RUN_CKPT), _resume(w))[1], 2,
       r"older flatgen \(trainer_state.pt"),
    _c("resume-partial-metrics-line", lambda w, m: (_damage_metrics(w / "run" / "metrics.jsonl"),
                                                    _resume(w))[1], 2,
       r"metrics.jsonl' line 2 is not a JSON record"),
    _c("resume-from-missing-step", lambda w, m: ["train", w / "toy.yaml", "--out", w / "run",
                                                 "--resume-from", "7"], 2,
       r"no checkpoint of step 7 .*steps saved: 5, 10, 12"),
    _c("resume-empty-run-config", lambda w, m: ((w / "run" / "config.yaml").write_text(""),
                                                _resume(w))[1], 2,
       r"config.yaml' is empty: restore the run's own"),
    # ---- commands that load weights
    _c("sample-garbage-weights", lambda w, m: (_corrupt(w / RUN_CKPT / "model.safetensors",
                                                        "garbage"), ["sample", w / "run"])[1], 2,
       r"model.safetensors' is not a readable safetensors file"),
    _c("sample-empty-weights", lambda w, m: (_corrupt(w / RUN_CKPT / "model.safetensors", "empty"),
                                             ["sample", w / "run"])[1], 2,
       r"is not a readable safetensors file"),
    _c("sample-config-switched-model", lambda w, m: (shutil.copy(w / "unet" / "config.yaml",
                                                                 w / "run" / "config.yaml"),
                                                     ["sample", w / "run"])[1], 2,
       r"does not fit the model of .*config.yaml"),
    _c("sample-emptied-config", lambda w, m: ((w / "run" / "config.yaml").write_text(""),
                                              ["sample", w / "run"])[1], 2, r"is empty"),
    _c("sample-nan-weights", lambda w, m: (_nan_weights(w / "run"), ["sample", w / "run"])[1], 2,
       r"non-finite weights .*retrain it with a smaller train.lr"),
    _c("evaluate-nan-weights", lambda w, m: (_nan_weights(w / "run"),
                                             ["evaluate", w / "run", "--weights", "raw"])[1], 2,
       r"non-finite weights"),
    _c("landscape-nan-weights", lambda w, m: (_nan_weights(w / "run"),
                                              ["landscape", w / "run", "--grid", "3"])[1], 2,
       r"non-finite weights"),
    _c("sample-not-a-run", lambda w, m: ["sample", w / "user"], 2, r"not a flatgen run directory"),
    _c("sample-out-exists", lambda w, m: ["sample", w / "run", "--out", w / "toy.yaml"], 2,
       r"exists: pass --force"),
    _c("sample-out-is-folder", lambda w, m: ["sample", w / "run", "--out", w / "user"], 2,
       r"is a folder: give a file name"),
    _c("sample-out-read-only", lambda w, m: (
        _deny_writes(m, w / "user", errno.EROFS),
        ["sample", w / "run", "--out", w / "user" / "s.png"])[1], 2, r"Read-only file system"),
    _c("sample-run-read-only", lambda w, m: (_deny_writes(m, w / "run", errno.EROFS),
                                             ["sample", w / "run"])[1], 2,
       r"Read-only file system"),
    # ---- export
    _c("export-out-is-file", lambda w, m: ["export", w / "unet", "--out", w / "toy.yaml"], 2,
       r"is a file: give a folder"),
    _c("export-into-run", lambda w, m: ["export", w / "unet", "--out", w / "run", "--force"], 2,
       r"is a flatgen run directory"),
    _c("export-into-export", lambda w, m: ["export", w / "unet", "--out", w / "export"], 2,
       r"holds an export already: pass --force"),
    _c("export-into-user-folder", lambda w, m: ["export", w / "unet", "--out", w / "user",
                                                "--force"], 2, r"holds other files"),
    _c("export-read-only", lambda w, m: (_deny_writes(m, w, errno.EROFS),
                                         ["export", w / "unet", "--out", w / "ro" / "p"])[1], 2,
       r"Read-only file system"),
    # ---- other commands
    _c("dro-invalid-yaml", lambda w, m: ["dro", _text(w / "d.yaml", "game: {steps: [\n"), "--out",
                                         w / "dro"], 2, r"is not valid YAML"),
    _c("study-runs-from-other-config", lambda w, m: ["study", _study(w, 8), "--out", w / "S",
                                                     "--no-progress"], 2,
       r"trained with a different config \(train.steps: 6 -> 8\)"),
    # ---- run-time failures: exit 1, one line, what was saved is kept
    _c("diverged-at-once", lambda w, m: ["train", w / "toy.yaml", "--out", w / "r", "--set",
                                         "train.lr=1e6", "--set", "method.preset=adm"], 1,
       r"diverged at step \d+: .*nothing was saved .*smaller train.lr \(now 1e\+06\)",
       writes=True, after=_nothing_saved("r")),
    _c("diverged-after-checkpoint", lambda w, m: (_nan_loss_from_call(m, 7),
                                                  ["train", w / "toy.yaml", "--out", w / "r",
                                                   "--set", "method.preset=adm"])[1], 1,
       r"diverged at step 7: the loss is nan; the last finite checkpoint \(step 5\) is kept",
       writes=True, after=_kept_step("r", 5)),
    _c("disk-full-in-checkpoint", lambda w, m: (_disk_full_at_checkpoint(m, 10),
                                                ["train", w / "toy.yaml", "--out", w / "r"])[1], 1,
       r"No space left on device: .*step-10.*what was saved before is kept", writes=True,
       after=_kept_step("r", 5)),
    _c("study-all-runs-failed", lambda w, m: (_fail_study_training(m),
                                              ["study", _study(w, 6), "--out", w / "S2",
                                               "--no-progress"])[1], 1, r"all 1 runs failed",
       writes=True),
    _c("internal-error", lambda w, m: (_internal_bug(m), ["sample", w / "run"])[1], 1,
       r"internal error: TypeError: unsupported operand"),
]


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


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure(case: Case, world: Path, monkeypatch):
    args = case.setup(world, monkeypatch)
    before = _snapshot(world)
    result = _invoke(*args)
    monkeypatch.undo()  # the injected OS errors end with the command
    stderr = result.stderr.strip().splitlines()
    assert result.exit_code == case.code, result.output
    assert 1 <= len(stderr) <= 2 and "Traceback" not in result.output, result.output
    assert stderr[0].startswith("error: "), stderr
    import re

    assert re.search(case.message, stderr[0]), stderr[0]
    after = _snapshot(world)
    assert {k: after.get(k) for k in before} == before  # nothing that existed has changed
    if not case.writes:
        assert set(after) == set(before), set(after) - set(before)  # refused before any write
    if case.after is not None:
        case.after(world)


def test_failed_resume_leaves_the_run_then_resumes_exactly(world):
    """A refused resume changes no byte; the same run then resumes as if nothing happened."""
    run = world / "run"
    before = _snapshot(run)
    assert _invoke(*_resume(world), "--set", "train.lr=0.5").exit_code == 2
    assert _snapshot(run) == before
    result = _invoke(*_resume(world), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 20


# ---------------------------------------------------------------- kill points


def _train_until_killed(config: Path, out: Path, point: str) -> int:
    """Run `flatgen train` in a forked process that FLATGEN_KILL_AT kills; its exit code."""

    def child() -> None:
        os.environ["FLATGEN_KILL_AT"] = point
        result = _invoke("train", config, "--out", out, "--no-progress")
        os._exit(50 + result.exit_code)  # not killed: say so through the exit code

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(120)
    return process.exitcode


def _state(run: Path) -> dict[str, torch.Tensor]:
    from flatgen.train import latest_checkpoint

    ckpt = latest_checkpoint(run / "checkpoints")
    tensors = {f"{f.stem}/{k}": v for f in sorted(ckpt.glob("*.safetensors"))
               for k, v in load_file(f).items()}
    return tensors


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "it_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


KILLS = [  # (FLATGEN_KILL_AT, what the run directory holds after the kill)
    ("config", "config.yaml, no checkpoint"),
    ("step:3", "before the first checkpoint"),
    ("metrics-write:8", "half a metrics line"),
    ("checkpoint-write:10", "a .tmp-step-10 folder"),
    ("checkpoint-link:10", "step-10 newer than last"),
]


@pytest.mark.parametrize("point", [k[0] for k in KILLS], ids=[k[1] for k in KILLS])
def test_killed_run_restarts_bitwise_equal(world, point, monkeypatch):
    out = world / "killed"
    assert _train_until_killed(world / "toy.yaml", out, point) == 137
    if point.startswith("checkpoint-write"):
        assert [p.name[:13] for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] \
            == [".tmp-step-10-"]
    result = _invoke("train", world / "toy.yaml", "--out", out, "--resume", "--no-progress")
    assert result.exit_code == 0, result.output
    if point in ("config", "step:3"):
        assert "no checkpoint yet: starting from step 0" in result.stdout
    reference, restarted = _state(world / "run"), _state(out)
    assert reference.keys() == restarted.keys() and "ema/net.0.weight" in reference
    for key in reference:  # weights, EMA, optimizer moments, RNG: bitwise
        assert torch.equal(reference[key], restarted[key]), key
    assert _records(out) == _records(world / "run")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "last", "step-10", "step-12", "step-5"]  # no temporaries left


def test_kill_point_in_a_fresh_interpreter(world):
    """The hook works in `python -m flatgen.cli` itself, as a user's kill -9 would hit it."""
    import subprocess
    import sys

    out = world / "k"
    env = os.environ | {"FLATGEN_KILL_AT": "checkpoint-write:5", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flatgen.cli", "train", str(world / "toy.yaml"), "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 137 and proc.stderr == "", proc.stderr
    assert not (out / "checkpoints" / "last").exists() and (out / "config.yaml").is_file()
    result = _invoke("train", world / "toy.yaml", "--out", out, "--resume", "--no-progress")
    assert result.exit_code == 0 and "starting from step 0" in result.stdout
    reference, restarted = _state(world / "run"), _state(out)
    assert all(torch.equal(reference[k], restarted[k]) for k in reference)
