"""The study runner: units, skip-on-restart, failure isolation, the report and its verdicts."""

import json
import re

import pytest
import yaml
from rich.console import Console

from flatgen.config import ConfigError
from flatgen.study import load_study_config, plan_units, run_study, split_method
from flatgen.study.collect import collect_study
from flatgen.study.config import StudyConfig, unit_config
from flatgen.train import RunDirError

QUIET = Console(quiet=True)


def test_split_method():
    assert split_method("adm") == ("adm", "raw")
    assert split_method("ema") == ("adm", "ema")
    assert split_method("sam+ema") == ("sam", "ema")
    assert split_method("ip+swa") == ("ip", "swa")
    assert split_method("sam") == ("sam", "raw")


def test_nine_methods_need_three_trainings_per_seed():
    study = StudyConfig(methods=["adm", "ema", "swa", "ip", "ip+ema", "ip+swa", "sam", "sam+ema",
                                 "sam+swa"],
                        seeds=[0, 1])
    units = plan_units(study)
    assert sorted(u.name for u in units) == ["adm-s0", "adm-s1", "ip-s0", "ip-s1", "sam-s0",
                                             "sam-s1"]
    cfg = unit_config(study, "sam", 1)
    assert cfg.method.sam is not None and cfg.method.ema is not None and cfg.method.swa is not None
    assert cfg.train.seed == 1 and unit_config(study, "adm", 0).method.sam is None


def test_bad_study_config(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"methods": ["adm", "sgd"]}))
    with pytest.raises(ConfigError, match="methods"):
        load_study_config(path)
    path.write_text(yaml.safe_dump({"methods": ["adm"], "base": {"train": {"lr": -1}}}))
    with pytest.raises(ConfigError, match="train.lr"):
        load_study_config(path)


@pytest.fixture
def toy_study():
    return StudyConfig.model_validate({
        "name": "toy",
        "base": {"data": {"name": "toy2d", "n_train": 256, "n_test": 64},
                 "model": {"preset": "mlp2d"},
                 "train": {"steps": 6, "batch_size": 32, "warmup_steps": 1}},
        "methods": ["adm", "sam", "sam+ema"],
        "seeds": [0, 1],
        "evaluations": {
            "quality_steps": [3, 6], "n_samples": 32, "sharpness_batch": 32, "trace_matvecs": 6,
            "suites": ["quant", "noise"],
            "robustness": {"n_samples": 32, "bits": [8, 4], "noise_sigmas": [0.05],
                           "noise_draws": 1, "eval_steps": 3},
        },
    })


def test_study_end_to_end(tmp_path, toy_study, monkeypatch):
    out = tmp_path / "study"
    status = run_study(toy_study, out, QUIET, progress=False)
    assert set(status.values()) == {"done"}
    summary = collect_study(toy_study, out)
    assert not summary["missing"]
    html = (out / "report.html").read_text()
    # self-contained: every image is inline, nothing is fetched
    assert "data:image/png;base64," in html and not re.search(r'src="(?!data:)', html)
    assert "Claims" in html and "sam+ema" in html
    # the report names the chain each sampler walked and the quality protocol
    assert "adm: flatgen respaced (linspace 0..T-1)" in html
    assert "against the whole test split" in html
    results = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in results["results"]} == {
        (m, s) for m in ("adm", "sam", "sam+ema") for s in (0, 1)}
    lam = [r["metrics"]["lambda_max"] for r in results["results"]]
    assert all(v > 0 for v in lam)
    # the loss-under-perturbation curves are the analysis functions' own, on the fixed batch
    # drawn for the training seed (evaluation noise is per seed)
    from flatgen.analysis import filter_worst_case_sharpness
    from flatgen.flatness import SHARPNESS_SEED, sharpness_loss_fn
    from flatgen.study.measure import evaluation_seed
    from flatgen.train import load_run

    row = next(r for r in results["results"] if r["method"] == "sam" and r["seed"] == 1)
    curve = row["metrics"]["perturbation_detail"]["worst_case"]
    assert curve["rho"] == toy_study.evaluations.perturbation_rhos
    run = load_run(out / "runs" / "sam-s1")
    seed = evaluation_seed(SHARPNESS_SEED, 1)
    direct = filter_worst_case_sharpness(
        run.model("raw"), sharpness_loss_fn(run, 32, seed=seed), curve["rho"], seed=seed
    )
    assert curve["increase"] == pytest.approx(direct.increase, rel=1e-5)
    assert row["metrics"]["loss_increase_worst@0.1"] == curve["increase"][-1]
    assert {"loss_vs_worst_perturbation", "loss_vs_random_perturbation"} <= set(summary["plots"])
    assert any("worst-case weight perturbations" in c.text for c in summary["claims"])
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0] == "method,seed,base,weights,metric,value" and len(csv_lines) > 20

    # restart: everything is skipped, nothing retrained
    import flatgen.study.diffusion as study_module

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study_module, "train", no_training)
    assert set(run_study(toy_study, out, QUIET, progress=False).values()) == {"skipped (done)"}


def test_failed_run_does_not_stop_the_study(tmp_path, toy_study, monkeypatch):
    import flatgen.study.diffusion as study_module

    real_train = study_module.train

    def flaky_train(cfg, run_dir, **kw):
        if cfg.method.sam is not None and cfg.train.seed == 1:
            raise RuntimeError("simulated divergence")
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(study_module, "train", flaky_train)
    study = toy_study.model_copy(update={"evaluations": toy_study.evaluations.model_copy(
        update={"suites": [], "sharpness": False})})
    status = run_study(study, tmp_path, QUIET, progress=False)
    assert status["sam-s1"].startswith("failed: RuntimeError: simulated divergence")
    assert status["adm-s0"] == status["adm-s1"] == status["sam-s0"] == "done"
    assert (tmp_path / "runs" / "sam-s1" / "error.log").is_file()
    summary = collect_study(study, tmp_path)
    assert sorted(summary["missing"]) == ["sam seed 1", "sam+ema seed 1"]


def test_cifar10_study_config_on_a_tiny_stand_in(tmp_path):
    """The shipped CIFAR-10 protocol validates and runs end to end
    on generated CIFAR-format files."""
    import numpy as np

    from tests.test_data import _write_cifar_batch

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    for i in range(1, 6):
        _write_cifar_batch(root / f"data_batch_{i}.bin", [i, i], rng)
    _write_cifar_batch(root / "test_batch.bin", [0, 1, 2, 3], rng)
    study = load_study_config("configs/cifar10-study.yaml")
    assert (study.base["model"]["preset"] == "unet-adm-cifar10"
            and study.evaluations.quality_steps == [20, 100])
    base = json.loads(json.dumps(study.base))
    base["data"]["path"] = str(root)
    base["train"] |= {"steps": 1, "batch_size": 2, "warmup_steps": 0, "mixed_precision": "no"}
    tiny = study.model_copy(update={
        "base": base, "methods": ["adm", "ema"],
        "evaluations": study.evaluations.model_copy(update={
            "quality_steps": [2], "n_samples": 4, "suites": [], "sharpness": False,
            "inception_weights": None}),
    })
    status = run_study(tiny, tmp_path / "out", QUIET, progress=False)
    assert status == {"adm-s0": "done"}
    rows = json.loads(
        (tmp_path / "out" / "runs" / "adm-s0" / "eval" / "study_ema.json").read_text())
    assert rows["weights"] == "ema" and rows["metrics"]["w2@T2"] > 0


def test_changed_config_is_not_silently_reused(tmp_path, toy_study, monkeypatch):
    """A run trained with other settings (say a --quick demo in the same folder) is refused, and
    measurements taken with other evaluation settings are taken again, without retraining."""
    import flatgen.study.diffusion as study_module

    study = toy_study.model_copy(update={"methods": ["adm"], "seeds": [0], "evaluations":
                                         toy_study.evaluations.model_copy(
                                             update={"suites": [], "sharpness": False})})
    assert run_study(study, tmp_path, QUIET, progress=False) == {"adm-s0": "done"}

    longer = study.model_copy(
        update={"base": study.base | {"train": study.base["train"] | {"steps": 8}}})
    before = (tmp_path / "status.json").read_bytes()
    # refused before any unit runs (exit 2 in the CLI); status.json keeps the good run as done
    with pytest.raises(RunDirError, match="train.steps: 6 -> 8"):
        run_study(longer, tmp_path, QUIET, progress=False)
    assert (tmp_path / "status.json").read_bytes() == before
    # the 6-step numbers are not reported as 8-step ones, and the refusal says why
    with pytest.raises(ValueError, match="trained with another config"):
        collect_study(longer, tmp_path)

    def no_training(*a, **k):
        raise AssertionError("retrained")

    monkeypatch.setattr(study_module, "train", no_training)
    other_eval = study.model_copy(update={"evaluations": study.evaluations.model_copy(
        update={"quality_steps": [4]})})
    assert run_study(other_eval, tmp_path, QUIET, progress=False) == {"adm-s0": "done"}
    saved = json.loads((tmp_path / "runs" / "adm-s0" / "eval" / "study_adm.json").read_text())
    assert "w2@T4" in saved["metrics"] and "w2@T3" not in saved["metrics"]
    assert run_study(other_eval, tmp_path, QUIET, progress=False) == {"adm-s0": "skipped (done)"}


def test_robust_eps_of_each_model_alone_is_no_table_column():
    """A robust eps measured against each model's own clean score rewards the worse model: the
    table leaves it out, and only the claims (one shared threshold, tests/test_claims.py) judge
    robustness; a row without ladders shows no robustness claim."""
    from flatgen.report.claims import evaluate_claims
    from flatgen.report.tables import summary_table

    key = "robust_eps_denoiser_linf_t100"
    rows = [{"method": "sam", "seed": 0, "metrics": {key: 0.1, f"{key}_censored": 1.0}},
            {"method": "adm", "seed": 0, "metrics": {key: 0.05}}]
    header, _ = summary_table(rows, ["adm", "sam"])
    assert not any("robust" in h for h in header)
    assert evaluate_claims(rows, methods=["adm", "sam"], steps=[20]) == []
