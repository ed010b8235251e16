"""Kill points: FLATGEN_KILL_AT kills training (os._exit, like kill -9) at a fixed point; a
restart with --resume must end bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import failure_world
from tests.failure_world import invoke

pytestmark = pytest.mark.usefixtures("one_thread")
world_template, world = failure_world.world_template, failure_world.world  # the fixtures


def _train_until_killed(config: Path, out: Path, point: str) -> int:
    """Run `flatgen train` in a forked process that FLATGEN_KILL_AT kills; its exit code."""

    def child() -> None:
        os.environ["FLATGEN_KILL_AT"] = point
        result = invoke("train", config, "--out", out, "--no-progress")
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
    result = invoke("train", world / "toy.yaml", "--out", out, "--resume", "--no-progress")
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
    result = invoke("train", world / "toy.yaml", "--out", out, "--resume", "--no-progress")
    assert result.exit_code == 0 and "starting from step 0" in result.stdout
    reference, restarted = _state(world / "run"), _state(out)
    assert all(torch.equal(reference[k], restarted[k]) for k in reference)
