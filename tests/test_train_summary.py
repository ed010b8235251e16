"""train_summary.json records what ran (the effective mixed precision, device, world size,
compile, and the torch / diffusers / flatgen versions); config.yaml keeps what the user asked."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import torch
import yaml

from flatgen.train import train


@pytest.mark.parametrize("env", [None, "bf16"])
def test_summary_records_what_ran(tmp_path, tiny_toy_config, fresh_accelerate, one_thread,
                                  monkeypatch, env):
    if env is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:  # what `accelerate launch --mixed_precision bf16` exports
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env)
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps = 4
    train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["mixed_precision"] == (env or "no")
    assert summary["device"] == "cpu" and summary["world_size"] == 1
    assert summary["compiled"] is False  # train.compile None: off on the CPU
    assert summary["versions"] == {"torch": torch.__version__, "diffusers": version("diffusers"),
                                   "flatgen": version("flatgen")}
    asked = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert asked["mixed_precision"] is None and asked["compile"] is None
