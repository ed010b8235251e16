"""Accelerate is respected (mixed precision from its environment), and training is watchable:
TensorBoard through Accelerate's tracker, sample grids every N steps, the loss curve."""

import importlib.util
import json

import pytest
from accelerate.state import AcceleratorState

from flatgen.config import build_config
from flatgen.train import train
from flatgen.train.loop import make_accelerator


@pytest.mark.parametrize("env,configured,expected", [
    ("bf16", None, "bf16"),  # what `accelerate launch --mixed_precision bf16` exports
    ("bf16", "no", "no"),  # the flatgen config, when it says so, wins
    (None, None, "no"),
])
def test_mixed_precision_comes_from_accelerate(monkeypatch, fresh_accelerate, env, configured,
                                               expected):
    if env is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env)
    cfg = build_config({"train": {"mixed_precision": configured, "cpu": True}})
    assert make_accelerator(cfg).mixed_precision == expected


def test_tensorboard_samples_and_loss_curve(tmp_path, tiny_toy_config, fresh_accelerate,
                                           one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.log_every, cfg.train.ckpt_every = 6, 2, 6
    cfg.train.log_with, cfg.train.sample_every = "tensorboard", 3
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    scalars = {e.step: e.value for e in acc.Scalars("loss")}
    assert scalars == pytest.approx({r["step"]: r["loss"] for r in logged}, rel=1e-6)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-3.png", "step-6.png"]
    assert (run / "loss_curve.png").stat().st_size > 1000


def test_sample_grids_do_not_change_training(tmp_path, tiny_toy_config, fresh_accelerate,
                                            one_thread):
    from flatgen.train.checkpoint import load_weights

    plain = tiny_toy_config.model_copy(deep=True)
    watched = tiny_toy_config.model_copy(deep=True)
    watched.train.sample_every = 4
    train(plain, tmp_path / "a", progress=False)
    AcceleratorState._reset_state(reset_partial_state=True)
    train(watched, tmp_path / "b", progress=False)
    a = load_weights(tmp_path / "a" / "checkpoints" / "last")
    b = load_weights(tmp_path / "b" / "checkpoints" / "last")
    assert all((a[k] == b[k]).all() for k in a)
    assert (tmp_path / "b" / "samples" / "step-8.png").is_file()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_package_is_one_line_before_any_write(tmp_path, tiny_toy_config):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.log_with = "wandb"
    with pytest.raises(ValueError, match="needs the wandb package") as err:
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_logs_what_metrics_jsonl_logs(tmp_path, tiny_toy_config, fresh_accelerate,
                                                    one_thread, monkeypatch):
    """train.log_with wandb through Accelerate, offline (nothing leaves the machine): one run,
    whose log holds every loss that metrics.jsonl holds, exactly as JSON writes it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.log_every, cfg.train.ckpt_every = 4, 2, 4
    cfg.train.log_with = "wandb"
    train(cfg, tmp_path / "run", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
              .splitlines()]
    runs = list((tmp_path / "wandb").rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and len(logged) == 2
    log = runs[0].read_bytes()  # history values are stored as their JSON text
    assert all(json.dumps(r["loss"]).encode() in log for r in logged)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_writes_under_the_runs_logs_folder(tmp_path, tiny_toy_config, fresh_accelerate,
                                                 one_thread, monkeypatch):
    """Without WANDB_DIR, W&B's offline run lands in RUN/logs (as the README says), not in
    ./wandb of the working directory."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.log_every, cfg.train.ckpt_every = 2, 2, 2
    cfg.train.log_with = "wandb"
    train(cfg, tmp_path / "run", progress=False)
    assert list((tmp_path / "run" / "logs").rglob("offline-run-*/run-*.wandb"))
    assert not (tmp_path / "wandb").exists()
