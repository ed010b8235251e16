"""Every failure ends in one clear line and loses nothing (issue 13), as a table of cases.

Each case builds a world (tests/failure_world.py: a trained toy run, a U-Net run and its
export, config files), breaks something, runs one command in-process and checks: the exit code
(2: input refused before any work; 1: failure at run time), stderr of at most 2 lines with no
traceback, the message, and the sha256 of every file that existed before, unchanged. Exit-2
cases also create no file. Read-only filesystems and full disks are injected as OSErrors (the
tests run as root). The kill points are tested in tests/test_kill_points.py.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import failure_world
from tests.failure_world import (
    _assert,
    _cifar,
    _corrupt,
    _damage_metrics,
    _deny_writes,
    _disk_full_at_checkpoint,
    _fail_study_training,
    _hidden_only,
    _hold_lock,
    _image_folder,
    _internal_bug,
    _kept_step,
    _legacy,
    _nan_loss_from_call,
    _nan_weights,
    _nothing_saved,
    _pickle_payload,
    _pretrained,
    _resume,
    _set,
    _study,
    _text,
    _user_run_lookalike,
    _write_yaml,
    invoke,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("one_thread")
world_template, world = failure_world.world_template, failure_world.world  # the fixtures


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
    # ---- issue 20: types and shapes that escaped the validators
    _c("set-list-for-a-name", lambda w, m: _set(w, "method.preset=[sam]"), 2,
       r"method.preset must be one of .*got \['sam'\]"),
    _c("set-truncated-flow", lambda w, m: _set(w, "train.lr=[1,"), 2,
       r"--set train.lr: the value is not valid YAML"),
    _c("set-python-tag", lambda w, m: _set(w, f"train.lr=!!python/object/apply:os.system "
                                              f"['touch {w / 'pwned'}']"), 2,
       r"--set train.lr: .*constructor for the tag", after=lambda w: _assert(
           not (w / "pwned").exists())),
    _c("config-nested-3000-deep", lambda w, m: ["train", _text(w / "d.yaml", "train: " + "[" * 3000
                                                               + "]" * 3000), "--out", w / "r"],
       2, r"d.yaml' is not valid YAML \(nested more than 64 levels deep\)"),
    _c("pretrained-null-beta", lambda w, m: _pretrained(w, beta_start=None), 2,
       r"model.pretrained"),
    _c("pretrained-list-timesteps", lambda w, m: _pretrained(w, num_train_timesteps=[1000]), 2,
       r"model.pretrained"),
    # ---- accepted when they should be refused
    _c("config-duplicate-key", lambda w, m: ["train", _text(w / "k.yaml", "train: {steps: 3}\n"
                                                            "train: {steps: 4}\n"), "--out",
                                             w / "r"], 2, r"duplicate key 'train' \(line 2"),
    _c("set-steps-true", lambda w, m: _set(w, "train.steps=true"), 2,
       r"train.steps: Input should be a valid integer"),
    _c("set-eval-section", lambda w, m: _set(w, "eval.steps=[0]"), 2, r"eval: unknown key"),
    _c("swa-start-past-last-step", lambda w, m: _set(w, "method.swa.start=500"), 2,
       r"method.swa.start: step 500 is not before the last step \(train.steps=12\)"),
    _c("study-empty-file", lambda w, m: ["study", _text(w / "s.yaml", ""), "--out", w / "S"], 2,
       r"study config .*s.yaml' is empty"),
    _c("study-name-a-path", lambda w, m: ["study", _text(w / "s.yaml", "name: ../../x\n"),
                                          "--out", w / "S"], 2, r"name: String should match"),
    _c("study-override-typo", lambda w, m: ["study", _text(w / "s.yaml", "methods: [sam]\n"
                                                           "overrides: {sma: [a=1]}\n"),
                                            "--out", w / "S"], 2, r"'sma' is not a base"),
    _c("robustness-set-nested-3000-deep", lambda w, m: [
        "robustness", w / "run", "--set", "robustness.bits=" + "[" * 3000 + "]" * 3000], 2,
       r"--set robustness.bits: the value is not valid YAML: nested more than 64"),
    _c("dro-duplicate-key", lambda w, m: ["dro", _text(w / "d.yaml", "seeds: [0]\nseeds: [1]\n"),
                                          "--out", w / "dro"], 2,
       r"d.yaml' is not valid YAML \(duplicate key 'seeds'"),
    # ---- resource bounds, before any write
    _c("batch-size-10-to-12", lambda w, m: _set(w, "train.batch_size=1000000000000"), 2,
       r"train.batch_size: Input should be less than or equal to 65536"),
    _c("grad-accum-over-batch", lambda w, m: _set(w, "train.grad_accum=32"), 2,
       r"grad_accum 32 splits train.batch_size 16 into empty micro-batches: at most 16"),
    _c("seed-negative", lambda w, m: _set(w, "train.seed=-1"), 2,
       r"train.seed: Input should be greater than or equal to 0"),
    _c("image-size-unet-cannot-take", lambda w, m: ["train", _write_yaml(w / "i.yaml", {
        "data": {"name": "image_folder", "path": str(w / "user"), "image_size": 9,
                 "channels": 1}, "model": {"preset": "unet-digits"}}), "--out", w / "r"], 2,
       r"model.preset 'unet-digits' cannot take samples of shape \(1, 9, 9\)"),
    _c("sample-n-huge", lambda w, m: ["sample", w / "run", "--n", "1000000000"], 2,
       r"Invalid value for '--n'"),
    # ---- what counts as a run; nothing written where it should not be
    _c("force-on-a-folder-with-its-own-config", lambda w, m: (_user_run_lookalike(w), [
        "train", w / "toy.yaml", "--out", w / "user", "--force"])[1], 2,
       r"holds 'config.yaml', which flatgen did not write"),
    _c("hidden-file-is-content", lambda w, m: ["train", w / "toy.yaml", "--out", _hidden_only(w)],
       2, r"not empty and holds no flatgen run"),
    _c("export-inside-a-run", lambda w, m: ["export", w / "unet", "--out", w / "run" / "sub"], 2,
       r"inside the flatgen run"),
    _c("evaluate-out-inside-a-model", lambda w, m: ["evaluate", w / "run", "--out",
                                                    w / "export" / "eval"], 2,
       r"inside the model folder"),
    _c("sharpness-out-read-only", lambda w, m: (_deny_writes(m, w / "user", errno.EROFS),
                                                ["sharpness", w / "run", "--out",
                                                 w / "user" / "o"])[1], 2,
       r"cannot write to .*Read-only file system"),
    _c("landscape-run-read-only", lambda w, m: (_deny_writes(m, w / "run", errno.EROFS),
                                                ["landscape", w / "run", "--grid", "3"])[1], 2,
       r"cannot write to .*Read-only file system"),
    # ---- the lock, and faults inside libraries
    _c("train-run-locked", lambda w, m: (_hold_lock(m, w / "run", 4242), _resume(w))[1], 2,
       r"is in use by process 4242"),
    _c("disk-full-inside-safetensors", lambda w, m: (_disk_full_at_checkpoint(m, 10, rust=True),
                                                     ["train", w / "toy.yaml", "--out",
                                                      w / "r"])[1], 1,
       r"No space left on device: .*step-10.*what was saved before is kept", writes=True,
       after=_kept_step("r", 5)),
    _c("debug-0-is-off", lambda w, m: (m.setenv("FLATGEN_DEBUG", "0"), _internal_bug(m),
                                       ["sample", w / "run"])[2], 1,
       r"internal error: TypeError"),
]


def test_the_table_is_large_enough():
    assert len(CASES) >= 85 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure(case: Case, world: Path, monkeypatch):
    args = case.setup(world, monkeypatch)
    before = snapshot(world)
    result = invoke(*args)
    monkeypatch.undo()  # the injected OS errors end with the command
    stderr = result.stderr.strip().splitlines()
    assert result.exit_code == case.code, result.output
    assert 1 <= len(stderr) <= 2 and "Traceback" not in result.output, result.output
    assert stderr[0].startswith("error: "), stderr
    assert re.search(case.message, stderr[0]), stderr[0]
    after = snapshot(world)
    assert {k: after.get(k) for k in before} == before  # nothing that existed has changed
    if not case.writes:
        assert set(after) == set(before), set(after) - set(before)  # refused before any write
    if case.after is not None:
        case.after(world)


def test_failed_resume_leaves_the_run_then_resumes_exactly(world):
    """A refused resume changes no byte; the same run then resumes as if nothing happened."""
    run = world / "run"
    before = snapshot(run)
    assert invoke(*_resume(world), "--set", "train.lr=0.5").exit_code == 2
    assert snapshot(run) == before
    result = invoke(*_resume(world), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 20
