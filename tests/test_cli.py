"""The command line contract: exit codes, files written, one-line errors."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from flatgen.cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def toy_config_file(tmp_path, tiny_toy_config):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(tiny_toy_config.model_dump(mode="json")))
    return path


@pytest.fixture
def trained_toy_run(tmp_path, toy_config_file):
    out = tmp_path / "run"
    result = _invoke("train", toy_config_file, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("override,key", [
    ("train.lr=-1", "train.lr"), ("train.nope=3", "train.nope"),
    ("data.name=imagenet", "data.name"),
])
def test_bad_config_exits_2_with_one_line(toy_config_file, tmp_path, override, key):
    result = _invoke("train", toy_config_file, "--out", tmp_path / "r", "--set", override)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_missing_inputs_exit_2(tmp_path):
    assert _invoke("train", tmp_path / "missing.yaml").exit_code == 2
    assert _invoke("evaluate", tmp_path).exit_code == 2
    assert _invoke("sample", tmp_path / "nope").exit_code == 2


def test_missing_data_path_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "cifar10", "path": str(tmp_path / "nowhere")},
                                   "model": {"preset": "unet-adm32"}}))
    result = _invoke("train", cfg, "--out", tmp_path / "r", "--no-progress")
    assert result.exit_code == 2 and "CIFAR-10 not found" in result.output


def test_train_sample_evaluate(trained_toy_run, toy_config_file):
    run = trained_toy_run
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    result = _invoke("sample", run, "--steps", 5, "--n", 16, "--out", run / "s.png")
    assert result.exit_code == 0, result.output
    assert (run / "s.png").read_bytes()[:4] == b"\x89PNG"
    result = _invoke("evaluate", run, "--steps", "3,5", "--sampler", "ddim", "--n", 32)
    assert result.exit_code == 0, result.output
    quality = json.loads((run / "eval" / "quality.json").read_text())
    assert [r["steps"] for r in quality["results"]] == [3, 5]
    assert quality["floor"]["w2_floor"] > 0 and all(r["w2"] > 0 for r in quality["results"])
    # bad values for options are input errors too
    assert _invoke("evaluate", run, "--steps", "a,b").exit_code == 2
    assert _invoke("evaluate", run, "--sampler", "euler").exit_code == 2
    assert _invoke("sample", run, "--weights", "ema").exit_code == 2
    # a second train into the same directory needs --resume
    assert _invoke("train", toy_config_file, "--out", run, "--no-progress").exit_code == 2


def test_export_loads_into_ddpm_pipeline(tmp_path):
    from diffusers import DDPMPipeline

    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"steps": 2, "batch_size": 8, "warmup_steps": 0}}))
    out = tmp_path / "run"
    assert _invoke("train", cfg, "--out", out, "--no-progress").exit_code == 0
    result = _invoke("export", out, "--out", tmp_path / "pipe")
    assert result.exit_code == 0, result.output
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.unet.config.sample_size == 8 and pipe.scheduler.config.num_train_timesteps == 1000
    images = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 8, 8, 1)


def test_study_dispatch_and_bad_keys(tmp_path):
    bad = tmp_path / "cls.yaml"
    bad.write_text(yaml.safe_dump({"task": "classifier", "bogus_key": 1}))
    result = _invoke("study", bad, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "bogus_key" in result.output
    bad.write_text(yaml.safe_dump({"methods": ["adm", "nope"]}))
    result = _invoke("study", bad, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "methods" in result.output
    plan = _invoke("study", "configs/digits-study.yaml", "--plan", "--out", tmp_path / "s")
    assert plan.exit_code == 0
    lines = [ln for ln in plan.output.strip().splitlines() if not ln.startswith("#")]
    assert len(lines) == 3 * 3 + 1 and lines[-1].endswith("--collect")  # 3 trajectories x 3 seeds


def test_classifier_study_plan_runs_nothing(tmp_path):
    """--plan on a classifier study lists its units (12 methods x 3 seeds) and trains nothing."""
    result = _invoke("study", "configs/classifier-digits.yaml", "--out", tmp_path / "c", "--plan")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == 12 * 3 + 1 and lines[-1].endswith("--collect")
    assert lines[0].endswith("--only plain-s0") and not (tmp_path / "c").exists()


def test_robustness_setting_errors_are_one_readable_line(trained_toy_run):
    def error(*args: str) -> list[str]:
        result = _invoke("robustness", trained_toy_run, *args)
        assert result.exit_code == 2
        return result.output.strip().splitlines()

    fix = "(write --set robustness.KEY=VALUE, lists like robustness.bits=[8,4])"
    assert error("--suite", "quant", "--set", "robustness.bitz=[8]") == [
        f"error: invalid robustness setting: robustness.bitz: unknown key {fix}"]
    assert error("--suite", "quant", "--set", "robustness.bits=[1]") == [
        f"error: invalid robustness setting: robustness.bits: bits must be in 2..16 {fix}"]
    assert error("--suite", "quant", "--set", "bits=[8]") == [
        "error: --set takes robustness.KEY=VALUE (e.g. robustness.bits=[8,4]), got 'bits=[8]'"]
    assert error("--suite", "nope") == [
        "error: --suite must be from steps, exposure, quant, attack, noise, got 'nope'"]


def test_interrupted_training_exits_130(toy_config_file, tmp_path, monkeypatch):
    """A run stopped early (Ctrl-C) must not look like success to a script."""
    import flatgen.train
    from flatgen.train.loop import TrainResult

    def stopped(cfg, out, **kw):
        return TrainResult(run_dir=out, steps=1, final_loss=1.0, seconds=1.0, it_per_s=1.0)

    monkeypatch.setattr(flatgen.train, "train", stopped)
    result = _invoke("train", toy_config_file, "--out", tmp_path / "r", "--no-progress")
    assert result.exit_code == 130 and "--resume" in result.output


def test_missing_weights_fail_before_any_work(trained_toy_run):
    result = _invoke("evaluate", trained_toy_run, "--weights", "swa", "--steps", "2")
    assert result.exit_code == 2 and "has no 'swa' weights" in result.output
    assert len(result.output.strip().splitlines()) == 1  # no progress bar drawn first


def test_force_replaces_only_what_it_names(tmp_path, trained_toy_run, toy_config_file):
    """--force is the one way to overwrite: a sample file, an earlier export, a run."""
    run = trained_toy_run
    png = tmp_path / "s.png"
    png.write_bytes(b"user data")
    assert _invoke("sample", run, "--steps", 2, "--n", 4, "--out", png).exit_code == 2
    assert png.read_bytes() == b"user data"
    assert _invoke("sample", run, "--steps", 2, "--n", 4, "--out", png, "--force").exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # train --force over a run starts it over: its old checkpoints and eval results go
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "quality.json").write_text("{}")
    result = _invoke("train", toy_config_file, "--out", run, "--force", "--no-progress",
                     "--set", "train.steps=4")
    assert result.exit_code == 0 and "--force: replacing the run" in result.stdout
    assert not (run / "eval").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "step-4"]
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] \
        == [2, 4]


def test_export_force_replaces_an_export_whole(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"steps": 1, "batch_size": 4, "warmup_steps": 0}}))
    assert _invoke("train", cfg, "--out", tmp_path / "run", "--no-progress").exit_code == 0
    pipe = tmp_path / "pipe"
    assert _invoke("export", tmp_path / "run", "--out", pipe).exit_code == 0
    (pipe / "stale.txt").write_text("from an older export")
    assert _invoke("export", tmp_path / "run", "--out", pipe).exit_code == 2
    assert (pipe / "stale.txt").exists()
    assert _invoke("export", tmp_path / "run", "--out", pipe, "--force").exit_code == 0
    assert not (pipe / "stale.txt").exists() and (pipe / "model_index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_resume_of_a_finished_run_says_nothing_was_trained(trained_toy_run, toy_config_file):
    before = (trained_toy_run / "metrics.jsonl").read_bytes()
    result = _invoke("train", toy_config_file, "--out", trained_toy_run, "--resume",
                     "--no-progress")
    assert result.exit_code == 0, result.output
    assert "had already finished" in result.output and "nothing was trained" in result.output
    assert (trained_toy_run / "metrics.jsonl").read_bytes() == before
