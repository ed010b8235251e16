"""The run directory of `flatgen train`: every check before anything is written, then the writes.

plan_run() reads and validates (the output path, the resume state, the config change, the
metrics log) without changing a byte, so every process can run it and a refused resume leaves
the run as it was. prepare_run_dir() then makes the changes the plan calls for.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatgen.config import Config, config_changes, dump_config, load_config
from flatgen.errors import InputError
from flatgen.io import (
    RUN_LOCK,
    RUN_MARKER,
    check_writable,
    file_mode,
    is_model_dir,
    is_run_dir,
    is_temporary,
    remove_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from flatgen.train.checkpoint import (
    checkpoint_at,
    checkpoint_step,
    discard_after,
    latest_checkpoint,
    remove_stale_checkpoint_temporaries,
)

CKPT_ROOT = "checkpoints"
# what a resumed run really applies; anything else (the optimizer's lr, the method, the model,
# the data...) is fixed by the checkpoint, or would make the run a different one
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.ckpt_every", "train.keep_checkpoints")
TRAINING_FILES = ("metrics.jsonl", "train_summary.json")
TRAINING_DIRS = (CKPT_ROOT, "eval")
# the names flatgen writes in a run directory: a folder that is no run but holds one of them
# is refused even with --force, so that no file of the user's is replaced
RUN_NAMES = ("config.yaml", *TRAINING_FILES, *TRAINING_DIRS, "samples", "logs")


class RunDirError(InputError):
    """The run directory cannot be used as asked (exists without --resume, or nothing to resume)."""


@dataclass
class RunPlan:
    """What train() found in the run directory, and what it will change there."""

    ckpt: Path | None = None  # the checkpoint to resume from
    start_step: int = 0
    finished: bool = False  # the checkpoint already reached train.steps: nothing to do
    metrics_lines: list[str] | None = None  # metrics.jsonl trimmed to start_step (None: none)
    start_over: bool = False  # --force on a run: its training files go
    notes: list[str] = field(default_factory=list)  # what the user is told


def _short_repr(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_resume_config(cfg: Config, run_dir: Path) -> None:
    """Refuse a config for a resumed run that differs from the run's own in what resuming
    cannot apply."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    own = load_config(saved, fix="restore the run's own config.yaml")
    changes = config_changes(own.model_dump(mode="json"), cfg.model_dump(mode="json"))
    refused = [(key, a, b) for key, a, b in changes
               if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)]
    if refused:
        shown = ", ".join(f"{key} ({_short_repr(a)} -> {_short_repr(b)})" for key, a, b in refused)
        raise RunDirError(f"cannot change {shown} when resuming: start a new run with --out")


def read_metrics(path: Path, last_step: int) -> list[str]:
    """The lines of metrics.jsonl up to last_step; a partial last line (a kill mid-write) is
    dropped, a damaged line before it is refused."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    keep = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break  # the line a killed process was writing
            raise RunDirError(f"{str(path)!r} line {i + 1} is not a JSON record: delete that "
                              "line, then resume") from None
        if step <= last_step:
            keep.append(line)
    return keep


def _stopped_early_hint(run_dir: Path) -> str:
    return (f"run directory {str(run_dir)!r} holds a run that stopped before its first "
            "checkpoint: pass --resume to start it again from step 0, or --force to start over")


def plan_run(cfg: Config, run_dir: Path, *, resume: bool, resume_from: int | None = None,
             force: bool = False) -> RunPlan:
    """Check run_dir for training as asked; RunDirError / CheckpointError if it cannot be.

    Writes nothing.
    """
    if force and (resume or resume_from is not None):
        raise RunDirError("--force starts the run over; it cannot be combined with --resume")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {str(run_dir)!r} is a file, not a folder: choose another --out")
    check_writable(run_dir)
    # a run is never made inside another run or a model folder (it holds its own outputs only)
    for folder in run_dir.resolve().parents:
        if is_run_dir(folder) or is_model_dir(folder):
            kind = "flatgen run" if is_run_dir(folder) else "model folder"
            raise RunDirError(f"--out {str(run_dir)!r} is inside the {kind} {str(folder)!r}, "
                              "which holds only its own outputs: choose another --out")
    has_run = is_run_dir(run_dir)
    ckpt_root = run_dir / CKPT_ROOT
    plan = RunPlan()
    if not (resume or resume_from is not None):
        if has_run and not force:
            if latest_checkpoint(ckpt_root) is None:
                raise RunDirError(_stopped_early_hint(run_dir))
            raise RunDirError(f"run directory {str(run_dir)!r} already holds a run: pass --resume "
                              "to continue it, or choose another --out (--force starts over)")
        if run_dir.is_dir() and not has_run and not _fresh(run_dir):
            if not force:
                raise RunDirError(f"--out {str(run_dir)!r} is not empty and holds no flatgen "
                                  "run: choose another --out, or pass --force to write into it")
            taken = [name for name in RUN_NAMES if (run_dir / name).exists()]
            if taken:  # --force deletes or replaces only what flatgen wrote
                raise RunDirError(f"--out {str(run_dir)!r} holds {taken[0]!r}, which flatgen "
                                  "did not write (the folder is no flatgen run): choose "
                                  "another --out")
        plan.start_over, plan.metrics_lines = has_run, []
        if has_run:
            plan.notes.append(f"--force: replacing the run in {str(run_dir)!r} "
                              "(its checkpoints, metrics and eval results)")
        return plan
    if not has_run:
        raise RunDirError(f"nothing to resume: {str(run_dir)!r} holds no run "
                          "(start it without --resume)")
    check_resume_config(cfg, run_dir)
    ckpt = (checkpoint_at(ckpt_root, resume_from) if resume_from is not None
            else latest_checkpoint(ckpt_root))
    if ckpt is None:
        plan.notes.append(f"{str(run_dir)!r} has no checkpoint yet: starting from step 0")
        plan.metrics_lines = []
        return plan
    step = checkpoint_step(ckpt)
    if step > cfg.train.steps:
        raise RunDirError(
            f"cannot resume {str(run_dir)!r} at step {step} with train.steps={cfg.train.steps}, "
            f"fewer than done: pass --set train.steps={step} or more")
    plan.ckpt, plan.start_step, plan.finished = ckpt, step, step == cfg.train.steps
    plan.metrics_lines = read_metrics(run_dir / "metrics.jsonl", step)
    return plan


def prepare_run_dir(cfg: Config, run_dir: Path, plan: RunPlan) -> list[str]:
    """Make the changes plan_run checked: the config, the trimmed log, no stale temporaries.

    Returns notes for the user (checkpoints discarded by --resume-from).
    """
    notes = []
    run_dir.mkdir(parents=True, exist_ok=True)
    from flatgen import __version__

    # first: from here on the folder is a run, whose files flatgen may replace
    write_json_atomic(run_dir / RUN_MARKER, {"flatgen_run": 1, "written_by": __version__})
    ckpt_root = run_dir / CKPT_ROOT
    if plan.start_over:
        for name in TRAINING_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in TRAINING_DIRS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
    remove_stale_temporaries(run_dir)
    remove_stale_checkpoint_temporaries(ckpt_root)
    gone = discard_after(ckpt_root, plan.start_step)
    if gone:
        notes.append(f"resuming from step {plan.start_step}: discarded the later checkpoints "
                     f"(steps {', '.join(map(str, gone))})")
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    if plan.metrics_lines is not None:
        text = "".join(ln + "\n" for ln in plan.metrics_lines)
        write_text_atomic(run_dir / "metrics.jsonl", text)
    return notes


def dry_build(cfg: Config) -> None:
    """Build the model and run it once on a batch of one zero sample of the data's shape, so a
    shape the model cannot take is refused (exit 2) before the run directory is made. The
    global RNG is left as it was."""
    if cfg.model.pretrained:  # its sample_size is checked against the data when it loads
        return
    import torch

    from flatgen.data import sample_shape
    from flatgen.models import model_from_config

    shape = sample_shape(cfg.data)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = model_from_config(cfg.model, shape).eval()
            model(torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long))
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"model.preset {cfg.model.preset!r} cannot take samples of shape "
                         f"{shape} (data {cfg.data.name!r}): {reason[:200]}; choose another "
                         "data.image_size or model.preset") from None


def _fresh(run_dir: Path) -> bool:
    """A folder holding nothing but what a fresh run killed in its first writes left: the
    marker, the lock file, and temporaries of the marker and config.yaml. A user's files,
    hidden ones included, are content."""
    own = (RUN_MARKER, "config.yaml")
    return all(p.name in (RUN_MARKER, RUN_LOCK) or is_temporary(p, own)
               for p in run_dir.iterdir())


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive OS lock (flock) on the run directory's lock file while training writes
    there; the OS releases it when the process exits or dies. RunDirError, naming the holder's
    pid, if another process holds it. A folder (and lock file) made here for a run that
    wrote nothing (refused) is removed again."""
    run_dir = Path(run_dir)
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_LOCK
    existed = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunDirError(f"run directory {str(run_dir)!r} is in use by {holder} (another "
                          "flatgen train): wait for it to end, or stop it") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if not existed and [p.name for p in run_dir.iterdir()] == [RUN_LOCK]:
            path.unlink(missing_ok=True)  # refused before any write: leave no trace
            for folder in made:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        else:
            os.ftruncate(fd, 0)  # an idle lock file is empty: the run's files stay as they were
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def finished_result(run_dir: Path, step: int) -> dict[str, float]:
    """final_loss, seconds, it_per_s of a run whose checkpoint reached its last step, read back."""
    summary = read_json(run_dir / "train_summary.json") or {}
    if summary.get("steps") == step:
        try:
            return {k: float(summary[k]) for k in ("final_loss", "seconds", "it_per_s")}
        except (KeyError, TypeError, ValueError):
            pass
    # no usable summary (say a crash right after the last checkpoint): the last loss logged
    final_loss = float("nan")
    for line in read_metrics(run_dir / "metrics.jsonl", step):
        loss = json.loads(line).get("loss")
        final_loss = float(loss) if isinstance(loss, (int, float)) else final_loss
    return {"final_loss": final_loss, "seconds": 0.0, "it_per_s": 0.0}


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
