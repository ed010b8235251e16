"""Tests for the attacks and weight noise of flatgen.robustness: PGD/FGSM invariants, the x_t
attack against its closed form on Gaussian data, ladder records of the x_T attack and of weight
noise, and the robust level of a record."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.models import build_model
from flatgen.robustness import (
    attack_denoiser_input,
    attack_initial_noise,
    classifier_robust_accuracy,
    ddim_generate,
    fgsm,
    filter_normalized_direction,
    perturb_weights,
    pgd,
    robust_level,
    weight_noise_sweep,
)
from tests.test_robustness import small_convnet

SCHEDULE = NoiseSchedule("linear", 1000)
RECORD_KEYS = {"levels", "clean", "values", "select_clean", "select_values", "metric",
               "level_name", "extra"}


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


class GaussianDenoiser(nn.Module):
    """The exact noise predictor for x0 ~ N(0, s^2 I): E[e | x_t] = a_t x_t with
    a_t = sigma_t / (abar_t s^2 + sigma_t^2), sigma_t^2 = 1 - abar_t."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s
        self.dummy = nn.Parameter(torch.zeros(()))  # the samplers read device/dtype from here
        self.abar = SCHEDULE.alphas_cumprod.float()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def gain(t: int, s: float) -> float:
    abar = SCHEDULE.alphas_cumprod[t].item()
    return math.sqrt(1 - abar) / (abar * s * s + 1 - abar)


# ---------------------------------------------------------------- PGD / FGSM


def mlp_objective() -> tuple[nn.Module, callable]:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    return net, lambda z: net(z).squeeze(1) ** 2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box_and_increases_objective(norm: str) -> None:
    _, objective = mlp_objective()
    x = torch.rand(64, 10, generator=torch.Generator().manual_seed(0))
    eps = 0.1 if norm == "linf" else 0.5
    box = (0.0, 1.0)
    g = torch.Generator().manual_seed(3)
    adv = pgd(objective, x, eps=eps, norm=norm, steps=20, clamp=box, generator=g)
    delta = adv - x
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps * (1 + 1e-5)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert torch.all(objective(adv) >= objective(x) - 1e-6)
    assert objective(adv).mean() > 1.5 * objective(x).mean()
    adv_f = fgsm(objective, x, eps=eps, norm=norm, clamp=box)
    assert adv_f.min() >= 0.0 and adv_f.max() <= 1.0
    assert objective(adv_f).mean() > objective(x).mean()
    # eps = 0 gives the clean input back, exactly
    assert torch.equal(pgd(objective, x, eps=0.0, norm=norm, generator=g), x)
    assert torch.equal(fgsm(objective, x, eps=0.0, norm=norm), x)
    adv_v, values = pgd(objective, x, eps=eps, norm=norm, steps=20, clamp=box, generator=g,
                        return_values=True)
    torch.testing.assert_close(values, objective(adv_v).detach())
    # same generator seed, same result
    adv2 = pgd(objective, x, eps=eps, norm=norm, steps=20, clamp=box,
               generator=torch.Generator().manual_seed(3))
    assert torch.equal(adv, adv2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_restarts_keep_the_worst_per_sample(norm: str) -> None:
    # restart k draws its start after restart k-1's from the one generator: two restarts see
    # every point one restart sees, so no sample gets a lower value, and some get a higher one
    _, objective = mlp_objective()
    x = torch.rand(64, 10, generator=torch.Generator().manual_seed(0))
    eps = 0.3 if norm == "linf" else 1.5
    kw = {"eps": eps, "norm": norm, "steps": 3, "return_values": True}
    _, one = pgd(objective, x, restarts=1, generator=torch.Generator().manual_seed(4), **kw)
    _, two = pgd(objective, x, restarts=2, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.all(two >= one) and torch.any(two > one * 1.001)
    with pytest.raises(ValueError, match="restarts"):
        pgd(objective, x, eps=eps, restarts=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_optimum_of_a_linear_objective(norm: str) -> None:
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    eps = 0.3
    adv = pgd(lambda z: (z * w).sum(1), x, eps=eps, norm=norm, steps=10, random_start=False)
    dual = w.abs().sum(1) if norm == "linf" else w.norm(dim=1)  # max of w.delta over the ball
    torch.testing.assert_close((adv * w).sum(1), (x * w).sum(1) + eps * dual, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_classifier_robust_accuracy_matches_linear_margins(norm: str, attack: str) -> None:
    # a linear two-class model: a point survives eps iff its margin exceeds eps * ||w||_dual
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, generator=g), 0.1
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([-w, w]) / 2)  # logit of class 1 minus class 0: score
        model.bias.copy_(torch.tensor([-b, b]) / 2)
    x = torch.randn(400, 8, generator=g)
    score = x @ w + b
    y = (score > 0).long()
    y[:40] = 1 - y[:40]  # some misclassified points
    eps_list = [0.05, 0.1, 0.2, 0.4]
    # without a random start, 10 steps of 2.5 eps / 10 reach the optimum eps * w / ||w||_dual
    res = classifier_robust_accuracy(model, x, y, eps_list=eps_list, norm=norm, attack=attack,
                                     steps=10, random_start=False, clamp=None)
    dual = w.abs().sum() if norm == "linf" else w.norm()
    correct = (score > 0).long() == y
    expected = [
        (correct & (score.abs() > e * dual)).float().mean().item() for e in [0.0, *eps_list]
    ]
    assert res["eps"] == [0.0, *eps_list]
    np.testing.assert_allclose(res["accuracy"], expected, atol=1.5 / len(x))
    assert json.loads(json.dumps(res)) == res


# ---------------------------------------------------------------- x_t attack


@pytest.mark.parametrize("t", [100, 500])
def test_xt_attack_matches_the_closed_form_for_the_exact_gaussian_denoiser(t: int) -> None:
    # eps_hat(x) = a x, so the consistent-target residual at x_t + delta is r + (a - 1/sigma) delta
    # with r = a x_t - e: its largest squared norm in the L2 ball is (||r|| + |a - 1/sigma| eps)^2,
    # along r. One image per call, so that the clean loss gives ||r||^2 = d * clean.
    s, d = 0.5, 64
    model = GaussianDenoiser(s)
    a, sigma = gain(t, s), math.sqrt(1 - SCHEDULE.alphas_cumprod[t].item())
    c = abs(a - 1 / sigma)
    eps_list = [0.05, 0.2, 0.5, 1.0]
    x0 = s * torch.randn(3, d, generator=torch.Generator().manual_seed(7))
    for i in range(3):
        rec = attack_denoiser_input(model, SCHEDULE, x0[i : i + 1], t=t, eps_list=eps_list,
                                    norm="l2", seed=i)
        r = math.sqrt(d * rec["clean"])
        rise = [v - rec["clean"] for v in rec["values"]]
        expected = [((r + c * e) ** 2 - r * r) / d for e in eps_list]
        np.testing.assert_allclose(rise, expected, rtol=0.01)
        # the attack ends on the sphere, so the prediction moves by |a| eps exactly
        np.testing.assert_allclose(rec["extra"]["deviation"], [a * e for e in eps_list],
                                   rtol=1e-4)
        np.testing.assert_allclose(rec["extra"]["eps_over_sigma"], [e / sigma for e in eps_list])
    assert set(rec) == RECORD_KEYS and rec["levels"] == eps_list
    assert rec["select_clean"] is None and rec["select_values"] is None
    assert rec["extra"]["t"] == t and rec["extra"]["norm"] == "l2"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_xt_attack_cannot_hurt_a_denoiser_that_reads_the_noise_exactly(norm: str) -> None:
    # data at one point (s = 0): eps_hat(x) = x / sigma_t is the noise x contains, whatever x is,
    # so against the consistent target no perturbation raises the loss (it is 0 throughout);
    # against the original noise it would rise as ||delta||^2 / sigma^2
    model = GaussianDenoiser(0.0)
    x0 = torch.zeros(8, 32)
    rec = attack_denoiser_input(model, SCHEDULE, x0, t=500, eps_list=[0.1, 1.0], norm=norm,
                                steps=5, select=True)
    assert rec["clean"] < 1e-10 and max(rec["values"]) < 1e-10
    assert max(rec["select_values"]) < 1e-10
    sigma = rec["extra"]["sigma_t"]
    ratio = np.array(rec["extra"]["deviation"]) / np.array([0.1, 1.0])
    dual = math.sqrt(32) if norm == "linf" else 1.0  # ||delta||_2 at the corners of the cube
    assert np.all(ratio <= dual / sigma * (1 + 1e-4)) and np.all(ratio > 0)


def test_xt_attack_record_is_deterministic_with_a_separate_selection_draw() -> None:
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,))
    x0 = torch.randn(24, 2, generator=torch.Generator().manual_seed(1))
    kw = {"t": 100, "eps_list": [0.2, 0.05, 0.0], "norm": "linf", "steps": 4, "select": True}
    rec = attack_denoiser_input(model, SCHEDULE, x0, **kw)
    assert rec == attack_denoiser_input(model, SCHEDULE, x0, **kw)
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec
    assert rec["levels"] == [0.05, 0.2]  # sorted; eps 0 is the clean value
    assert rec["values"][1] > rec["values"][0] > rec["clean"]
    assert rec["select_clean"] != rec["clean"]  # another draw of the noise in x_t
    assert len(rec["select_values"]) == 2 and rec["select_values"][1] > rec["select_clean"]
    other = attack_denoiser_input(model, SCHEDULE, x0[:12], **{**kw, "select": False})
    assert other["clean"] != rec["clean"]
    with pytest.raises(ValueError, match="eps"):
        attack_denoiser_input(model, SCHEDULE, x0, t=100, eps_list=[-0.1])
    with pytest.raises(ValueError, match="t must be"):
        attack_denoiser_input(model, SCHEDULE, x0, t=1000, eps_list=[0.1])


# ---------------------------------------------------------------- x_T attack


def test_xT_attack_scores_the_quality_of_the_attacked_samples() -> None:
    # with the exact Gaussian denoiser and no clipping, DDIM is linear: sample = k x_T. Any
    # delta on the L2 sphere moves each sample by |k| eps, which the quality function below
    # measures (RMS distance to the clean samples), so the ladder is |k| eps / sqrt(d)
    d, n = 16, 6
    model = GaussianDenoiser(0.5)
    x_T = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    chain = {"steps": 4, "clip": False}
    with torch.no_grad():
        clean = ddim_generate(model, SCHEDULE, x_T, **chain)
        k = (ddim_generate(model, SCHEDULE, torch.ones(1, d), **chain) / torch.ones(1, d))[0, 0]
    torch.testing.assert_close(clean, k * x_T)

    def rms_to_clean(samples: torch.Tensor) -> dict[str, float]:
        dist = (samples - clean).pow(2).mean(1).sqrt().mean().item()
        return {"dist": dist, "other": 0.0}

    eps_list = [0.5, 2.0]
    rec = attack_initial_noise(model, SCHEDULE, x_T, eps_list=eps_list, quality=rms_to_clean,
                               metric="dist", norm="l2", sampling_steps=4, steps=3, clip=False,
                               threshold=0.5 * abs(k.item()))
    assert set(rec) == RECORD_KEYS and rec["metric"] == "dist" and rec["clean"] == 0.0
    expected = [abs(k.item()) * e / math.sqrt(d) for e in eps_list]
    np.testing.assert_allclose(rec["values"], expected, rtol=1e-4)
    np.testing.assert_allclose(rec["extra"]["deviation"], expected, rtol=1e-4)
    # the threshold 0.5 |k| is crossed at eps = 0.5 sqrt(d) = 2, the last level: interpolated
    assert rec["extra"]["robust"]["level"] == pytest.approx(2.0, rel=1e-4)
    assert rec["extra"]["robust"]["censored"] is False
    sel = attack_initial_noise(model, SCHEDULE, x_T, eps_list=eps_list,
                               quality=lambda x: float(x.pow(2).mean()), norm="l2",
                               sampling_steps=4, steps=2, clip=False, select=True)
    assert sel["select_clean"] != sel["clean"]  # a fresh x_T for the selection
    assert sel["metric"] == "quality" and len(sel["select_values"]) == 2


# ---------------------------------------------------------------- weight noise


def test_filter_normalized_noise() -> None:
    model = small_convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    assert set(direction) == {k for k, p in params.items() if p.ndim >= 2}
    for k, d in direction.items():
        torch.testing.assert_close(d.flatten(1).norm(dim=1), params[k].flatten(1).norm(dim=1))
    noisy = perturb_weights(model, 0.1, direction)
    for k, p in noisy.named_parameters():
        if k in direction:  # every filter moved by 10% of its norm
            rel = (p - params[k]).flatten(1).norm(dim=1) / params[k].flatten(1).norm(dim=1)
            torch.testing.assert_close(rel, torch.full_like(rel, 0.1))
        else:
            assert torch.equal(p, params[k])  # biases and norm params untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_weight_noise_ladder_by_hand() -> None:
    # every filter moves by sigma times its norm, so the relative Frobenius change of the weight
    # is sigma exactly: the score 1 + that change is 1 + sigma at every draw
    torch.manual_seed(0)
    model = nn.Linear(6, 4, bias=False)
    w0 = model.weight.detach().clone()
    calls = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        calls.append(1)
        change = ((m.weight - w0).norm() / w0.norm()).item()
        return {"score": 1 + change, "first": m.weight[0, 0].item()}

    rec = weight_noise_sweep(model, evaluate, sigmas=[0.2, 0.0, 0.1], draws=3, metric="score",
                             threshold=1.15)
    assert set(rec) == RECORD_KEYS | {"per_sample"} and rec["level_name"] == "sigma"
    assert rec["levels"] == [0.1, 0.2] and rec["clean"] == 1.0 and len(calls) == 1 + 2 * 3
    np.testing.assert_allclose(rec["values"], [1.1, 1.2], rtol=1e-5)
    # per draw (levels x draws): the values are their means
    np.testing.assert_allclose(rec["per_sample"], [[1.1] * 3, [1.2] * 3], rtol=1e-5)
    assert rec["per_sample"] == rec["extra"]["per_draw"]
    np.testing.assert_allclose(rec["extra"]["std"], [0.0, 0.0], atol=1e-6)
    assert rec["extra"]["robust"]["level"] == pytest.approx(0.15, rel=1e-4)
    assert rec["select_values"] is None
    # the selection uses other directions (a separate stream): the same sizes, other weights
    rec = weight_noise_sweep(model, evaluate, sigmas=[0.1], draws=2, metric="first",
                             clean={"first": w0[0, 0].item()}, select=True)
    assert rec["select_clean"] == rec["clean"] == pytest.approx(w0[0, 0].item())
    assert rec["extra"]["select_per_draw"] != rec["extra"]["per_draw"]
    with pytest.raises(ValueError, match="draws"):
        weight_noise_sweep(model, evaluate, draws=0)


# ---------------------------------------------------------------- robust level


def test_robust_level_interpolates_on_a_hand_example() -> None:
    rec = {"levels": [0.1, 0.2, 0.4], "values": [1.2, 1.4, 2.0], "clean": 1.0}
    # 1.5 is crossed between 0.2 (1.4) and 0.4 (2.0): 0.2 + 0.1 / 0.6 * 0.2
    assert robust_level(rec, threshold=1.5) == (pytest.approx(0.2 + 0.2 / 6), False)
    assert robust_level(rec, threshold=1.1) == (pytest.approx(0.05), False)  # from the clean
    assert robust_level(rec, threshold=2.5) == (0.4, True)  # never crossed: a lower bound
