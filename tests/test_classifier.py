"""Classifier study: attacks through the classifier path, adversarial training, distillation's
loss, spectral norm, and a tiny study that writes its outputs and resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from rich.console import Console

from flatgen.classify import (
    ClassifierStudyConfig,
    accuracy,
    adversarial_examples,
    build_classifier,
    distillation_loss,
    layer_spectral_norms,
    load_classifier_data,
    soft_labels,
    train_classifier,
)
from flatgen.classify.config import (
    SAM_OPTIONS,
    AdversarialMethod,
    DataSpec,
    PlainMethod,
    TrainSpec,
)
from flatgen.classify.methods import make_optimizer
from flatgen.config import SAMConfig
from flatgen.study import plan_units, run_study
from flatgen.study.collect import run_classifier_study
from flatgen.study.run import check_run_config
from flatgen.train import RunDirError

# tiny convolutions (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_classifier_data(DataSpec())


@pytest.fixture(scope="module")
def plain_model(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = build_classifier()
    train_classifier(
        model, x, y, method=PlainMethod(), train=TrainSpec(steps=100, cpu=True), seed=0
    )
    return model


def test_digits_are_in_the_unit_box(digits):
    x, y, xt, yt = digits
    assert x.shape[1:] == (1, 8, 8) and len(x) == len(y) and len(xt) == len(yt) == 297
    assert x.min() == 0 and x.max() == 1 and xt.min() >= 0 and xt.max() <= 1


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_attacks_stay_in_ball_and_box_and_hurt(plain_model, digits, attack, norm, eps):
    _, _, xt, yt = digits
    g = torch.Generator().manual_seed(0)
    adv = adversarial_examples(
        plain_model, xt, yt, eps=eps, norm=norm, attack=attack, steps=10, generator=g
    )
    d = (adv - xt).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert adv.min() >= 0 and adv.max() <= 1
    assert size.max() > 0.5 * eps  # it did move
    assert accuracy(plain_model, adv, yt) < accuracy(plain_model, xt, yt) - 0.1
    assert plain_model.training is False and all(p.requires_grad for p in plain_model.parameters())


@pytest.mark.parametrize("attack,norm", [("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2")])
def test_eps_zero_leaves_inputs_and_accuracy_unchanged(plain_model, digits, attack, norm):
    _, _, xt, yt = digits
    adv = adversarial_examples(
        plain_model,
        xt,
        yt,
        eps=0.0,
        norm=norm,
        attack=attack,
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(adv, xt)
    assert accuracy(plain_model, adv, yt) == accuracy(plain_model, xt, yt)


def test_adversarial_training_raises_robust_accuracy(digits):
    x, y, xt, yt = digits
    robust = {}
    for method in (PlainMethod(), AdversarialMethod(method="pgd_at", eps=0.15, steps=5)):
        torch.manual_seed(0)
        model = build_classifier()
        train_classifier(model, x, y, method=method, train=TrainSpec(steps=150, cpu=True), seed=0)
        g = torch.Generator().manual_seed(1)
        adv = adversarial_examples(
            model, xt, yt, eps=0.15, norm="linf", attack="pgd", steps=10, generator=g
        )
        robust[method.method] = accuracy(model, adv, yt)
    # measured: plain 0.24, pgd_at 0.51 (150 steps)
    assert robust["pgd_at"] > robust["plain"] + 0.15, robust


def test_distillation_loss_matches_hand_computation():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -1.0], [4.0, 1.0, 1.0]])
    temp = 3.0

    def softmax(row):
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    q_hand = [softmax(r) for r in t.tolist()]
    p_hand = [softmax(r) for r in s.tolist()]
    pairs = [list(zip(q, p, strict=True)) for q, p in zip(q_hand, p_hand, strict=True)]
    kl = [sum(qi * math.log(qi / pi) for qi, pi in row) for row in pairs]
    expected = temp**2 * sum(kl) / len(kl)
    q = soft_labels(t, temp)
    assert torch.allclose(q, torch.tensor(q_hand), atol=1e-6)
    loss = distillation_loss(s, q, temp)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # = T^2 x (cross-entropy between the softened distributions - the targets' entropy)
    ce = sum(-qi * math.log(pi) for row in pairs for qi, pi in row)
    ent = sum(-qi * math.log(qi) for q_ in q_hand for qi in q_)
    assert loss.item() == pytest.approx(temp**2 * (ce - ent) / 2, rel=1e-5)
    # gradient T (p - q) / N: the T^2 cancels the 1/T of the softened logits
    (grad,) = torch.autograd.grad(loss, s)
    assert torch.allclose(grad, temp * (torch.tensor(p_hand) - q) / 2, atol=1e-6)


def test_spectral_norm_keeps_largest_singular_value_near_one(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
    plain = build_classifier()
    train_classifier(plain, x, y, method=PlainMethod(), train=TrainSpec(steps=40, cpu=True))
    torch.manual_seed(0)
    sn = build_classifier()
    sn_method = PlainMethod(method="spectral_norm")
    train_classifier(sn, x, y, method=sn_method, train=TrainSpec(steps=40, cpu=True))
    sigmas = layer_spectral_norms(sn)
    assert len(sigmas) == 4
    # one power-iteration step per forward pass estimates sigma from below and lags the moving
    # weights a little: measured 1.01-1.10 after 40 steps
    assert all(1 - 1e-4 <= v < 1.12 for v in sigmas.values()), sigmas
    assert max(abs(v - 1) for v in layer_spectral_norms(plain).values()) > 0.5
    # the normalization is differentiable: the loss still has gradients for the raw weights
    loss = F.cross_entropy(sn(x[:8]), y[:8])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sn.parameters())


def test_config_rejects_unknown_keys():
    with pytest.raises(ValidationError):
        ClassifierStudyConfig.model_validate({"task": "classifier", "trian": {"steps": 5}})
    with pytest.raises(ValidationError):  # eps belongs to pgd_at, not to sam
        ClassifierStudyConfig.model_validate({"methods": [{"method": "sam", "eps": 0.1}]})
    with pytest.raises(ValidationError):
        ClassifierStudyConfig.model_validate({"methods": ["plain", "plain"]})
    with pytest.raises(ValidationError):
        ClassifierStudyConfig.model_validate({"correlation": {"subsets": {"a": ["nosuch"]}}})
    asam = {"method": "sam", "adaptive": True}
    cfg = ClassifierStudyConfig.model_validate({"methods": ["weight_decay", asam, "sam-every-k"]})
    assert cfg.methods[0].weight_decay > 0 and cfg.methods[1].sam.adaptive
    assert [m.label for m in cfg.methods] == ["weight_decay", "asam", "sam-every-k"]
    # one SAM vocabulary with the diffusion config; the old names say what to write instead
    for old, hint in (("asam", "adaptive: true"), ("sam_every_k", "sam-every-k")):
        with pytest.raises(ValidationError, match=hint):
            ClassifierStudyConfig.model_validate({"methods": [old]})
    # the primary pair is declared up front; the flat keys of older configs still name it
    old = ClassifierStudyConfig.model_validate({"correlation": {"attack": "pgd", "eps": 0.2}})
    assert old.correlation.primary.eps == 0.2 and old.correlation.primary.sharpness == "lambda_max"
    with pytest.raises(ValidationError):
        ClassifierStudyConfig.model_validate({"correlation": {"primary": {"sharpness": "nope"}}})


TINY = {
    "task": "classifier",
    "name": "tiny",
    "seeds": [0, 1],
    "threads": 1,
    "data": {"n_train": 256, "n_test": 64},
    "train": {"steps": 15, "cpu": True},
    "methods": ["sam", {"method": "distillation", "temperature": 10}],
    "attacks": {"eps_linf": [0.1], "eps_l2": [1.0], "pgd_steps": 3},
    "sharpness": {
        "n_batch": 32,
        "lanczos_iter": 4,
        "trace_matvecs": 3,
        "ascent_steps": 1,
        "draws": 2,
    },
    "correlation": {"subsets": {"just-sam": ["sam"]}},
}


def test_sam_methods_use_the_diffusion_configs_sam_schema():
    """A SAM method entry is the diffusion config's SAMConfig written flat beside `method`: the
    same fields, defaults and checks, and the optimizer built from it as training builds it."""
    # every SAMConfig option but the variant (the method) and DDP's sync is a method key
    assert set(SAM_OPTIONS) == set(SAMConfig.model_fields) - {"variant", "sync_perturbation"}
    assert {"rho", "adaptive", "eta", "k", "alpha"} <= set(SAM_OPTIONS)
    entry = {"method": "looksam", "rho": 0.1, "eta": 0.02, "k": 3, "adaptive": True}
    cfg = ClassifierStudyConfig.model_validate({"methods": ["sam", entry]})
    plain_sam, look = cfg.methods
    assert plain_sam.sam == SAMConfig(variant="sam")  # the diffusion defaults, rho 0.05
    assert look.sam == SAMConfig(variant="looksam", rho=0.1, eta=0.02, k=3, adaptive=True)
    assert look.label == "looksam-adaptive"
    # the diffusion config's checks, and keys it does not have, refused in the method entry
    for bad in ({"rho": 0}, {"eta": -1.0}, {"k": 0}, {"rho": "big"}, {"adaptive": 1},
                {"sync_perturbation": True}, {"variant": "looksam"}, {"radius": 0.1}):
        with pytest.raises(ValidationError):
            ClassifierStudyConfig.model_validate({"methods": [{"method": "sam", **bad}]})
    # a dumped config (results.json) reads back to the same config
    assert ClassifierStudyConfig.model_validate(cfg.model_dump()) == cfg
    # a results.json written before: rho None meant 0.05, or 0.5 with adaptive
    old = ClassifierStudyConfig.model_validate({"methods": [
        {"method": "sam", "adaptive": True, "rho": None, "k": 5, "alpha": 0.7}]})
    assert old.methods[0].sam.rho == 0.5
    # the optimizer carries every option, eta included
    opt = make_optimizer(look, torch.nn.Linear(2, 1).parameters(), 1e-3)
    assert type(opt).__name__ == "LookSAM" and opt.k == 3
    assert opt.defaults["rho"] == 0.1 and opt.defaults["eta"] == 0.02
    assert opt.defaults["adaptive"] is True


def test_tiny_study_writes_outputs_and_skips_finished_runs(tmp_path, monkeypatch):
    summary = run_classifier_study(TINY, tmp_path, progress=False)
    for name in ("results.json", "results.csv", "table.md", "scatter.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "table.md").read_text()
    assert "| sam | 2 |" in table and "| distillation | 2 |" in table and "PGD-L∞ ε=0.1" in table
    assert summary["table_markdown"] in table and summary["verdict"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n_runs"] == 4 and not results["failed"]
    entry = results["correlations"]["all"]["lambda_max"]["pgd-linf@0.1"]
    assert set(entry) == {"rho", "p", "n", "p_method", "role", "p_holm"}
    assert entry["role"] == "primary" and entry["n"] == 2  # two methods, two points
    assert results["correlations"]["just-sam"]["n"] == 1
    assert results["primary"]["methods"] == ["sam", "distillation"]
    assert len((tmp_path / "results.csv").read_text().strip().splitlines()) == 5
    assert "pgd-linf@0.1" in results["runs"][1]["extra"]["at_temperature"]
    # restart with one more method whose training fails: finished runs are not retrained
    import flatgen.classify.study as study

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(study, "train_classifier", boom)
    again = run_classifier_study(
        {**TINY, "methods": [*TINY["methods"], "plain"]}, tmp_path, progress=False
    )
    assert again["skipped"] == 4 and again["n_runs"] == 4
    assert set(again["failed"]) == {"plain-s0", "plain-s1"}
    assert (tmp_path / "runs" / "plain-s0" / "error.log").read_text().count("boom")
    assert again["table_markdown"] == summary["table_markdown"]
    # a changed measurement setting measures the trained runs again, from their saved weights
    # (training still fails: nothing is retrained); what the weights alone decide is unchanged
    changed = {**TINY, "attacks": {**TINY["attacks"], "pgd_steps": 4}}
    redo = run_classifier_study(changed, tmp_path, progress=False)
    assert redo["skipped"] == 0 and not redo["failed"] and redo["n_runs"] == 4
    remeasured = json.loads((tmp_path / "results.json").read_text())["runs"]
    for old, new in zip(results["runs"], remeasured, strict=True):
        assert new["evaluations"]["attacks"]["pgd_steps"] == 4
        assert new["robust"]["clean"] == old["robust"]["clean"]
        assert new["sharpness"]["lambda_max"] == pytest.approx(old["sharpness"]["lambda_max"])
    # a changed training setting is refused, before any unit runs: the run directories
    # belong to another config
    other = ClassifierStudyConfig.model_validate({**TINY, "train": {"steps": 16, "cpu": True}})
    with pytest.raises(RunDirError, match="train.steps"):
        check_run_config(tmp_path / "runs" / "sam-s0", other, plan_units(other)[0])
    status = (tmp_path / "status.json").read_text()
    with pytest.raises(RunDirError, match="train.steps: 15 -> 16"):
        run_study(other, tmp_path, Console(quiet=True), progress=False)
    assert (tmp_path / "status.json").read_text() == status


def test_classifier_study_through_the_generic_cli(tmp_path):
    """--plan lists one command per unit, --only runs one unit, a re-run skips finished
    units, --collect builds the report; all through the engine the diffusion studies use."""
    from typer.testing import CliRunner

    from flatgen.cli import app

    config, out = tmp_path / "tiny.yaml", tmp_path / "study"
    tiny = {**TINY, "methods": ["plain", "sam"], "correlation": {}}
    config.write_text(yaml.safe_dump(tiny))

    def flatgen(*args):
        result = CliRunner().invoke(app, ["study", str(config), "--out", str(out), *args])
        return result.exit_code, result.output

    code, text = flatgen("--plan")
    lines = text.strip().splitlines()
    units = ["plain-s0", "sam-s0", "plain-s1", "sam-s1"]
    assert code == 0 and lines[-1].endswith("--collect") and not out.exists()
    assert [ln.split("--only ")[1] for ln in lines[:-1]] == units
    code, text = flatgen("--collect")  # nothing to collect yet: refused, as for diffusion
    assert code == 2 and "no finished runs" in text
    code, text = flatgen("--only", "sam-s1", "--no-progress")
    assert code == 0 and "sam-s1: done" in text
    assert [p.name for p in (out / "runs").iterdir()] == ["sam-s1"]
    first = (out / "runs" / "sam-s1" / "result.json").read_text()
    code, text = flatgen("--no-progress")
    assert code == 0 and "| plain | 2 |" in text and "| sam | 2 |" in text
    status = json.loads((out / "status.json").read_text())
    assert status == {**dict.fromkeys(units, "done"), "sam-s1": "skipped (done)"}
    assert (out / "runs" / "sam-s1" / "result.json").read_text() == first  # not redone
    (out / "table.md").unlink()
    code, text = flatgen("--collect")
    assert code == 0 and "| sam | 2 |" in (out / "table.md").read_text()
    assert json.loads((out / "results.json").read_text())["n_runs"] == 4


def test_wrm_classifier_is_smooth_and_labels_its_certificate(digits):
    from torch import nn

    from flatgen.classify.config import WRMMethod
    from flatgen.classify.study import wrm_checks

    x, y, xt, yt = digits
    spec = WRMMethod(method="wrm", gamma=2.0, steps=3, certificate_steps=4, grad_tol=1e-9)
    assert spec.activation == "softplus"
    torch.manual_seed(0)
    model = build_classifier(activation=spec.activation)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    train_classifier(model, x[:128], y[:128], method=spec, train=TrainSpec(steps=5, cpu=True))
    cert = wrm_checks(model, xt[:32], yt[:32], spec=spec, rhos=[0.25, 1.0])
    assert cert["smoothness"] > 0 and cert["inner_grad_norm"] > cert["grad_tol"]
    assert not cert["converged"] and cert["label"] == "estimate"
    assert cert["bounds"][1] - cert["bounds"][0] == pytest.approx(2.0 * 0.75)
