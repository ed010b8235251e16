import json

import pytest
import torch

from flatgen.config import build_config
from flatgen.train import (
    RunDirError,
    find_checkpoint,
    load_run,
    load_trainer_state,
    load_weights,
    save_checkpoint,
    train,
)
from flatgen.train import checkpoint as checkpoint_module


class Crash(RuntimeError):
    pass


def _crash_at(step_to_crash):
    def on_step(step, loss):
        if step == step_to_crash:
            raise Crash(f"simulated crash at step {step}")

    return on_step


def _weights(run_dir, name="model"):
    return load_weights(run_dir / "checkpoints" / "last", name)


def _assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("method", ["adm", "sam+ema", "ip+swa"])
def test_resume_is_bitwise_equal(tmp_path, tiny_toy_config, method):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.method = build_config({"data": {"name": "toy2d"}, "model": {"preset": "mlp2d"},
                               "method": {"preset": method, "swa": {"start": 3, "every": 2}}
                               if "swa" in method else {"preset": method}}).method
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg, whole, progress=False)
    with pytest.raises(Crash):  # crash after the step-5 checkpoint, at step 8
        train(cfg, parts, progress=False, on_step=_crash_at(8))
    assert load_trainer_state(find_checkpoint(parts / "checkpoints" / "last"))["step"] == 5
    train(cfg, parts, resume=True, progress=False)
    for name in ["model"] + [n for n in ("ema", "swa") if n in method]:
        _assert_bitwise_equal(_weights(whole, name), _weights(parts, name))
    # the log is not duplicated by the replayed steps
    steps = [json.loads(line)["step"]
             for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == cfg.train.steps


def test_checkpoint_contents(tmp_path, tiny_toy_config):
    train(tiny_toy_config, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    # no pickle anywhere: safetensors and strict JSON only
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]
    meta = json.loads((ckpt / "trainer_state.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    state = load_trainer_state(ckpt)
    assert state["step"] == meta["step"] == tiny_toy_config.train.steps
    # AdamW's moments and step counters, the scheduler and the RNG come back as saved
    moments = state["optimizer"]["state"]
    assert sorted(moments) == list(range(len(moments))) and moments  # int keys survive JSON
    assert set(moments[0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert isinstance(state["optimizer"]["param_groups"][0]["betas"], tuple)
    assert state["scheduler"]["last_epoch"] == tiny_toy_config.train.steps
    assert state["rng_cpu"].dtype == torch.uint8
    run = load_run(tmp_path / "run")
    assert run.cfg == tiny_toy_config and run.available_weights() == ["raw"]
    with pytest.raises(ValueError, match="no 'ema' weights"):
        run.model("ema")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = tmp_path / "checkpoints" / "last"
    save_checkpoint(ckpt, {"model": model}, {"step": 1})
    before = load_weights(ckpt)

    def broken_save(tensors, path):
        (path.parent / "partial").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", broken_save)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, {"model": model}, {"step": 2})
    _assert_bitwise_equal(load_weights(ckpt), before)
    assert load_trainer_state(ckpt)["step"] == 1
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last"]  # no temporary left behind


def test_run_dir_guards(tmp_path, tiny_toy_config):
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(tiny_toy_config, tmp_path / "run", resume=True, progress=False)
    train(tiny_toy_config, tmp_path / "run", progress=False)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(tiny_toy_config, tmp_path / "run", progress=False)


def test_training_reduces_loss(tmp_path, tiny_toy_config):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.log_every = 150, 25
    train(cfg, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"]
              for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.8 * losses[0]


def test_two_process_training_equals_one_process(tmp_path, tiny_toy_config):
    """torchrun with 2 CPU processes (gloo) shards the global batch: with a synchronized SAM
    perturbation the result equals one process on the same global batch."""
    import subprocess
    import sys

    import yaml

    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.grad_clip, cfg.train.log_every = 4, None, 1
    cfg.method = build_config({"data": {"name": "toy2d"}, "model": {"preset": "mlp2d"}, "method": {
        "preset": "sam", "sam": {"sync_perturbation": True}}}).method
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    train(cfg, tmp_path / "one", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "flatgen.cli", "train", str(path),
           "--out", str(tmp_path / "two"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "train_summary.json").read_text())["processes"] == 2
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    from flatgen.models import build_model

    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    init = build_model("mlp2d", (2,)).state_dict()
    for k in one:
        # equal up to float reduction order (gloo's all-reduce vs one batch mean), which Adam's
        # normalization amplifies on tiny gradients: require 1% of the distance travelled
        moved = (one[k] - init[k]).abs().max()
        assert (one[k] - two[k]).abs().max() < 0.01 * moved, k
    # the logged loss is the mean over both processes (each sees half the batch), not rank 0's
    def logged(run):
        return [json.loads(line)["loss"]
                for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert logged("two")[0] == pytest.approx(logged("one")[0], rel=1e-6)
    assert logged("two") == pytest.approx(logged("one"), rel=1e-3)
    summary = {run: json.loads((tmp_path / run / "train_summary.json").read_text())
               for run in ("one", "two")}
    assert summary["two"]["final_loss"] == pytest.approx(summary["one"]["final_loss"], rel=1e-3)


def test_wrm_training(tmp_path, tiny_toy_config):
    """method.dro trains on WRM-perturbed x0; as gamma grows it becomes ordinary training."""
    def run(name, dro):
        cfg = tiny_toy_config.model_copy(deep=True)
        cfg.train.steps = 4
        cfg.method = build_config({"data": {"name": "toy2d"}, "model": {"preset": "mlp2d"},
                                   "method": {"dro": dro} if dro else {}}).method
        train(cfg, tmp_path / name, progress=False)
        return _weights(tmp_path / name)

    plain, huge, strong = (run("plain", None), run("huge", {"gamma": 1e7, "steps": 3}),
                           run("strong", {"gamma": 0.5, "steps": 3}))
    gap_huge = max((plain[k] - huge[k]).abs().max() for k in plain)
    gap_strong = max((plain[k] - strong[k]).abs().max() for k in plain)
    assert gap_huge < 1e-5 < gap_strong


def _crashed_run(run_dir, cfg):
    """A run that crashed at step 8, after its step-5 checkpoint."""
    with pytest.raises(Crash):
        train(cfg, run_dir, progress=False, on_step=_crash_at(8))
    return run_dir


def _resume_config(run_dir, *overrides):
    """What `flatgen train ... --out RUN --resume --set ...` trains with: the run's config
    plus overrides."""
    from flatgen.config import load_config

    return load_config(run_dir / "config.yaml", list(overrides))


def test_resume_refuses_another_method(tmp_path, tiny_toy_config):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.method = build_config({"data": {"name": "toy2d"}, "model": {"preset": "mlp2d"},
                               "method": {"preset": "adm"}}).method
    run = _crashed_run(tmp_path / "run", cfg)
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl")}
    with pytest.raises(RunDirError, match=r"cannot change method\.preset "
                                          r"\('adm' -> 'sam\+ema'\).* when resuming"):
        train(_resume_config(run, "method.preset=sam+ema"), run, resume=True, progress=False)
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / "train_summary.json").exists()
    # the run is intact: a plain resume finishes it
    result = train(_resume_config(run), run, resume=True, progress=False)
    assert result.steps == tiny_toy_config.train.steps
    assert load_trainer_state(find_checkpoint(run / "checkpoints" / "last"))["step"] == result.steps


def test_resume_refuses_another_lr(tmp_path, tiny_toy_config):
    run = _crashed_run(tmp_path / "run", tiny_toy_config)
    before = (run / "config.yaml").read_bytes()
    with pytest.raises(RunDirError) as err:
        train(_resume_config(run, "train.lr=0.5"), run, resume=True, progress=False)
    assert str(err.value) == ("cannot change train.lr (0.002 -> 0.5) when resuming: "
                              "start a new run with --out")
    assert (run / "config.yaml").read_bytes() == before
    assert load_trainer_state(find_checkpoint(run / "checkpoints" / "last"))["step"] == 5


def test_resume_with_more_steps_continues(tmp_path, tiny_toy_config):
    run = tmp_path / "run"
    train(tiny_toy_config, run, progress=False)
    before = (run / "config.yaml").read_bytes()
    # a change resuming cannot apply is refused, named alone (train.steps could change)
    with pytest.raises(RunDirError, match="cannot change train.batch_size") as err:
        train(_resume_config(run, "train.steps=20", "train.batch_size=16"), run, resume=True,
              progress=False)
    assert "train.steps" not in str(err.value)
    assert (run / "config.yaml").read_bytes() == before
    # what resuming applies goes through: more steps, another log/checkpoint period
    cfg = _resume_config(run, "train.steps=20", "train.log_every=4", "train.ckpt_every=3")
    result = train(cfg, run, resume=True, progress=False)
    assert result.steps == 20
    assert load_trainer_state(find_checkpoint(run / "checkpoints" / "last"))["step"] == 20
    assert _resume_config(run) == cfg
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12, 16, 20]
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 20


def test_resume_finished_run_changes_nothing(tmp_path, tiny_toy_config, monkeypatch):
    from flatgen.train import writer

    run = tmp_path / "run"
    trained = train(tiny_toy_config, run, progress=False)
    files = ("config.yaml", "metrics.jsonl", "train_summary.json",
             "checkpoints/last/trainer_state.safetensors", "checkpoints/last/trainer_state.json")
    before = {name: (run / name).read_bytes() for name in files}
    summary = json.loads(before["train_summary.json"])

    def no_progress_bar(*args, **kwargs):
        raise AssertionError("a finished run needs no progress bar")

    monkeypatch.setattr(writer, "make_progress", no_progress_bar)
    # fewer steps than done is refused, naming both numbers (it used to pass as "finished")
    with pytest.raises(RunDirError, match=r"at step 12 with train.steps=8, fewer than done"):
        train(_resume_config(run, "train.steps=8"), run, resume=True, progress=False)
    for cfg in (_resume_config(run),):  # finished
        result = train(cfg, run, resume=True, progress=True)
        assert result.steps == tiny_toy_config.train.steps
        assert result.final_loss == summary["final_loss"] == pytest.approx(trained.final_loss)
        assert (result.seconds, result.it_per_s) == (summary["seconds"], summary["it_per_s"])
        assert {name: (run / name).read_bytes() for name in files} == before
    # without a summary (a crash right after the last checkpoint), the last logged loss
    (run / "train_summary.json").unlink()
    result = train(_resume_config(run), run, resume=True, progress=False)
    last = json.loads(before["metrics.jsonl"].splitlines()[-1])
    assert result.steps == last["step"] == tiny_toy_config.train.steps
    assert result.final_loss == last["loss"]
    assert not (run / "train_summary.json").exists()


def test_checkpoint_history_keeps_the_last_k(tmp_path, tiny_toy_config):
    from flatgen.train import checkpoint_step, latest_checkpoint, step_checkpoints

    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.ckpt_every, cfg.train.keep_checkpoints = 2, 3  # saves at 2, 4, ..., 12
    train(cfg, tmp_path / "run", progress=False)
    root = tmp_path / "run" / "checkpoints"
    assert list(step_checkpoints(root)) == [8, 10, 12]
    assert sorted(p.name for p in root.iterdir()) == ["last", "step-10", "step-12", "step-8"]
    assert checkpoint_step(latest_checkpoint(root)) == 12
    # `last` is the newest step-<n>, sharing its files (hard links: no extra space)
    for f in (root / "last").iterdir():
        assert f.stat().st_ino == (root / "step-12" / f.name).stat().st_ino
    cfg.train.keep_checkpoints = 0  # only `last`
    train(cfg, tmp_path / "only-last", progress=False)
    assert [p.name for p in (tmp_path / "only-last" / "checkpoints").iterdir()] == ["last"]


def test_resume_from_an_earlier_step_replays_exactly(tmp_path, tiny_toy_config):
    from flatgen.train import checkpoint_step, latest_checkpoint, step_checkpoints

    run = tmp_path / "run"
    train(tiny_toy_config, run, progress=False)  # checkpoints 5, 10, 12
    final = {n: load_weights(run / "checkpoints" / "last", n) for n in ("model",)}
    log = (run / "metrics.jsonl").read_text()
    notes = []
    result = train(_resume_config(run), run, resume_from=5, progress=False, notify=notes.append)
    assert result.steps == 12 and notes == [
        "resuming from step 5: discarded the later checkpoints (steps 10, 12)"]
    _assert_bitwise_equal(final["model"], load_weights(run / "checkpoints" / "last", "model"))
    strip = [{k: v for k, v in json.loads(ln).items() if k != "it_per_s"}
             for ln in log.splitlines()]
    again = [{k: v for k, v in json.loads(ln).items() if k != "it_per_s"}
             for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert again == strip  # the same losses logged, once each
    assert list(step_checkpoints(run / "checkpoints")) == [5, 10, 12]
    assert checkpoint_step(latest_checkpoint(run / "checkpoints")) == 12


def test_trainer_state_round_trip_is_exact():
    """encode/decode: JSON + safetensors give back the state, types and bits included."""
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save as save_bytes

    from flatgen.train.state import decode_state, encode_state

    state = {"step": 7, "optimizer": {"state": {0: {"step": torch.tensor(3.0),
                                                   "exp_avg": torch.randn(2, 3)}},
                                      "param_groups": [{"betas": (0.9, 0.999), "lr": 1e-3,
                                                        "foreach": None, "params": [0]}]},
             "inf": float("inf"), "nan": float("nan"), "tag": {"__tensor__": "a user key"},
             "rng": torch.get_rng_state(), "half": torch.tensor([1.5], dtype=torch.float16)}
    tree, tensors = encode_state(state)
    text = json.dumps(tree, allow_nan=False)  # strict JSON
    back = decode_state(json.loads(text), load_bytes(save_bytes(tensors)))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert list(back["optimizer"]["state"]) == [0] and back["tag"] == state["tag"]
    assert back["inf"] == float("inf") and back["nan"] != back["nan"]
    moments = state["optimizer"]["state"][0]["exp_avg"], back["optimizer"]["state"][0]["exp_avg"]
    for a, b in ((state["rng"], back["rng"]), (state["half"], back["half"]), moments):
        assert a.dtype == b.dtype and torch.equal(a, b)
    # the fp16 loss scaler's state goes through as well (scale and growth tracker)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    p = torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([p], lr=0.1)
    scaler.scale(p.sum()).backward()
    scaler.step(sgd)
    scaler.update()
    tree, tensors = encode_state({"scaler": scaler.state_dict()})
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(decode_state(json.loads(json.dumps(tree)), tensors)["scaler"])
    assert restored.state_dict() == scaler.state_dict() and restored.get_scale() == 1024.0
    with pytest.raises(TypeError, match=r"cannot store object at state.x"):
        encode_state({"x": object()})


def test_checkpoints_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "checkpoints" / "last", {"model": torch.nn.Linear(2, 2)},
                        {"step": 1})
    finally:
        os.umask(old)
    ckpt = tmp_path / "checkpoints" / "last"
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()} == {0o644}


def test_step_seeding_leaves_the_cpu_generator_as_manual_seed_does():
    """seed_dropout (cheaper per step) keeps runs bitwise those of torch.manual_seed."""
    from flatgen.train.loop import seed_dropout, step_seed

    seed = step_seed(3, 17, stream=1)
    torch.manual_seed(seed)
    expected = torch.get_rng_state()
    torch.manual_seed(0)
    seed_dropout(seed, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), expected)
