"""Wasserstein DRO: WRM inner maximization and certificate, minibatch OT, the generator game."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from scipy.optimize import linear_sum_assignment
from torch import nn

from flatgen.data import sample_toy2d
from flatgen.dro import (
    DROExperimentConfig,
    DROGame,
    MLPGenerator,
    OTDistance,
    WRMConfig,
    classifier_per_sample_loss,
    defend,
    diffusion_per_sample_loss,
    exact_w2,
    ot_cost,
    per_sample_ot_cost,
    robust_objective,
    run_dro_experiment,
    wrm_certificate,
    wrm_loss,
    wrm_perturb,
)
from flatgen.dro.config import ShiftConfig
from flatgen.dro.experiment import run_single, shift_data

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _classifier(seed: int = 0, dim: int = 5, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 32), nn.SiLU(), nn.Linear(32, classes))


def _batch(n: int = 64, dim: int = 5, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(classes, (n,), generator=g)


# ---------------------------------------------------------------- WRM


def test_wrm_ascent_raises_loss_and_penalty_keeps_it_near_x0():
    model = _classifier()
    x0, y = _batch()
    loss = classifier_per_sample_loss(model, y)
    clean = loss(x0).mean().item()
    dists = []
    for gamma in (0.5, 2.0, 8.0, 32.0):
        x = wrm_perturb(loss, x0, gamma, steps=15)
        assert not x.requires_grad
        assert loss(x).mean().item() > clean  # the inner step finds harder inputs
        # x0 is feasible, so the maximized robust objective cannot be below the clean loss
        assert robust_objective(loss, x, x0, gamma).mean().item() >= clean - 1e-6
        dists.append((x - x0).pow(2).sum(1).mean().item())
    assert all(a > b for a, b in zip(dists, dists[1:], strict=False)), dists
    assert dists[-1] < 0.05 * dists[0]
    assert all(p.grad is None for p in model.parameters())  # inner loop leaves params alone


def test_wrm_large_gamma_is_ordinary_diffusion_training():
    from flatgen.diffusion import NoiseSchedule
    from flatgen.models import TimeMLP

    torch.manual_seed(0)
    net = TimeMLP(dim=2, hidden=32, depth=2)
    schedule = NoiseSchedule("linear", timesteps=100)
    x0 = sample_toy2d("moons", 64, seed=0)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 100, (64,), generator=g)
    noise = torch.randn(64, 2, generator=g)
    loss = diffusion_per_sample_loss(net, schedule, t, noise)

    def grads(value: torch.Tensor) -> torch.Tensor:
        net.zero_grad()
        value.backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    clean = grads(loss(x0).mean())
    rel = []
    for gamma in (0.03, 0.3, 3.0, 300.0):
        robust = grads(wrm_loss(loss, x0, gamma=gamma, steps=15))
        rel.append(((robust - clean).norm() / clean.norm()).item())
    # the robust gradient tends to the clean one as gamma grows, and is really different at
    # small gamma (so the limit is not vacuous)
    assert all(a > b for a, b in zip(rel, rel[1:], strict=False)), rel
    assert rel[0] > 0.05 and rel[-1] < 1e-4
    assert not torch.equal(wrm_perturb(loss, x0, gamma=300.0), x0)  # it did move, a little


def test_certificate_is_exact_for_a_linear_loss():
    # loss(x) = a . x: phi_gamma = a . x0 + |a|^2 / (4 gamma); the worst case over the ball
    # E|x - x0|^2 <= rho is a . x0 + |a| sqrt(rho), which the bound attains at
    # gamma = |a| / (2 sqrt(rho))
    a = torch.tensor([3.0, -4.0])  # |a| = 5
    x0, _ = _batch(32, dim=2)
    loss = lambda x: x @ a  # noqa: E731
    rho = 0.09
    worst = (x0 @ a).mean().item() + 5.0 * math.sqrt(rho)
    for gamma in (1.0, 5.0 / (2 * math.sqrt(rho)), 40.0):
        cert = wrm_certificate(loss, x0, gamma, rhos=[0.0, rho], steps=5)
        expected_phi = (x0 @ a).mean().item() + 25.0 / (4 * gamma)
        assert cert.robust_loss == pytest.approx(expected_phi, rel=1e-5)
        assert cert.bounds[1] >= worst - 1e-5
        assert cert.bound(0.0) >= cert.clean_loss
    tight = wrm_certificate(loss, x0, 5.0 / (2 * math.sqrt(rho)), rhos=[rho])
    assert tight.bounds[0] == pytest.approx(worst, rel=1e-5)


def _pgd_worst(loss, x0: torch.Tensor, radius: float, steps: int = 60) -> float:
    """Projected ascent with every sample in its own L2 ball (a subset of the W2 ball)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x).sum(), x)
        with torch.no_grad():
            x = x + 0.1 * radius * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            d = x - x0
            x = x0 + d * (radius / d.norm(dim=1, keepdim=True).clamp_min(radius))
    return loss(x).mean().item()


def test_certificate_bounds_the_worst_case_found_by_attacks():
    model = _classifier(seed=3)
    x0, y = _batch(seed=4)
    loss = classifier_per_sample_loss(model, y)
    found = wrm_certificate(loss, x0, 2.0, rhos=[], steps=20)
    rho = found.transport_cost  # the radius at which WRM found its worst case
    pgd = _pgd_worst(loss, x0, math.sqrt(rho))
    assert pgd > found.clean_loss and found.adv_loss > found.clean_loss
    for gamma in (0.5, 1.0, 4.0, 16.0):  # the bound holds for every gamma, not only 2.0
        bound = wrm_certificate(loss, x0, gamma, rhos=[rho], steps=20).bounds[0]
        assert bound >= found.adv_loss - 1e-5, gamma
        assert bound >= pgd - 1e-5, gamma


def test_wrm_rejects_bad_inputs():
    x0, y = _batch()
    with pytest.raises(ValueError, match="gamma"):
        wrm_perturb(lambda x: x.sum(1), x0, gamma=0.0)
    with pytest.raises(ValueError, match="shape"):
        wrm_perturb(lambda x: x.sum(), x0, gamma=1.0)
    with pytest.raises(ValidationError):
        WRMConfig(gamma=-1.0)
    assert WRMConfig(gamma=2.0).steps == 15


# ---------------------------------------------------------------- OT


def test_ot_matches_exact_assignment_on_equal_sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(12, 3, generator=g, dtype=torch.float64) + 0.5
    cost = torch.cdist(x.detach(), y).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    assignment = cost[rows, cols].mean()

    exact = ot_cost(x, y, "exact")
    assert exact.item() == pytest.approx(assignment, rel=1e-9)
    assert exact_w2(x, y) == pytest.approx(math.sqrt(assignment), rel=1e-9)
    # envelope theorem: the gradient is the one of the fixed assignment
    (grad,) = torch.autograd.grad(exact, x)
    torch.testing.assert_close(grad, 2.0 / 12 * (x.detach() - y[torch.as_tensor(cols)]))

    sinkhorn = ot_cost(x, y, "sinkhorn", reg=0.01, sinkhorn_iters=500).item()
    assert sinkhorn == pytest.approx(assignment, rel=0.03)
    sliced = ot_cost(x, y, "sliced", n_projections=256).item()
    assert 0.0 < sliced <= assignment  # projections never increase transport cost
    for solver in ("exact", "sinkhorn", "sliced"):
        per = per_sample_ot_cost(x, y, solver, reg=0.01, sinkhorn_iters=500)
        assert per.shape == (12,) and bool((per >= 0).all())
    assert per_sample_ot_cost(x, y, "exact").mean().item() == pytest.approx(assignment, rel=1e-9)


def test_ot_unequal_sizes():
    x = sample_toy2d("8gaussians", 40, seed=0)
    y = sample_toy2d("8gaussians", 70, seed=1)
    plan_cost = ot_cost(x, y, "exact").item()
    assert exact_w2(x, y) ** 2 == pytest.approx(plan_cost, rel=1e-4)
    assert 0.0 < ot_cost(x, y, "sliced").item() <= plan_cost * 1.001
    with pytest.raises(ValueError, match="solver"):
        ot_cost(x, y, "greedy")


# ---------------------------------------------------------------- game


def test_defenders_find_harder_samples_within_the_penalty():
    real = sample_toy2d("8gaussians", 128, seed=0)
    torch.manual_seed(0)
    fake = MLPGenerator(4, 2)(torch.randn(128, 4)).detach()
    ot = OTDistance("exact")
    before = ot.cost(real, fake).item()
    moved = []
    for gamma in (1.5, 4.0, 16.0):
        hard = defend(real, fake, gamma, steps=5, ot=ot)
        assert ot.cost(hard, fake).item() > before  # hard set is farther from the model
        moved.append((hard - real).pow(2).sum(1).mean().item())
    assert moved[0] > moved[1] > moved[2] > 0


@pytest.mark.parametrize("solver", ["exact", "sliced"])
def test_one_game_iteration_reduces_ot_distance(solver):
    real = sample_toy2d("8gaussians", 256, seed=0)
    torch.manual_seed(0)
    gen = MLPGenerator(4, 2, hidden=64, depth=2)
    game = DROGame(gen, 4, gamma=2.0, steps=3, ot=OTDistance(solver), lr=1e-2, seed=0)
    z = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = exact_w2(gen(z), real)
    stats = game.step(lambda: real)
    with torch.no_grad():
        after = exact_w2(gen(z), real)
    assert stats["defender_cost"] > 0
    assert after < before


def test_game_with_large_gamma_is_min_wasserstein_training():
    real = sample_toy2d("swissroll", 128, seed=0)

    def generator_grad(gamma: float, steps: int) -> torch.Tensor:
        torch.manual_seed(0)
        gen = MLPGenerator(4, 2, hidden=32, depth=2)
        DROGame(gen, 4, gamma=gamma, steps=steps, seed=0).step(lambda: real)
        return torch.cat([p.grad.flatten() for p in gen.parameters()])

    plain = generator_grad(1.0, steps=0)  # no defenders: minimum-Wasserstein training
    torch.testing.assert_close(generator_grad(1e5, steps=3), plain, rtol=1e-3, atol=1e-6)
    assert (generator_grad(1.5, steps=3) - plain).norm() > 0.1 * plain.norm()


# ---------------------------------------------------------------- experiment harness


def test_configs_validate_and_reject_unknown_keys():
    for name in ("toy2d-dro.yaml", "digits-dro-game.yaml"):
        DROExperimentConfig.model_validate(yaml.safe_load((CONFIGS / name).read_text()))
    base = {"datasets": [{"kind": "toy2d", "name": "moons"}]}
    DROExperimentConfig.model_validate(base)
    with pytest.raises(ValidationError, match="gama"):
        DROExperimentConfig.model_validate({**base, "game": {"gama": 2.0}})
    with pytest.raises(ValidationError, match="toy2d needs name"):
        DROExperimentConfig.model_validate({"datasets": [{"kind": "toy2d", "name": "spiral"}]})
    with pytest.raises(ValidationError, match="methods"):
        DROExperimentConfig.model_validate({**base, "methods": ["gan"]})


def test_shift_translates_images_and_offsets_vectors():
    imgs = -torch.ones(2, 1, 8, 8)
    imgs[:, 0, 2, 3] = 1.0
    moved = shift_data(
        imgs.flatten(1), ShiftConfig(noise_std=0, translate=0, translate_pixels=1), (1, 8, 8)
    )
    moved = moved.view(2, 1, 8, 8)
    assert moved[0, 0, 3, 4] == 1.0 and moved[0, 0, 2, 3] == -1.0
    pts = torch.zeros(5, 2)
    out = shift_data(pts, ShiftConfig(noise_std=0, translate=0.5), None)
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), 0.5))


def _tiny_cfg() -> dict:
    return {
        "name": "tiny",
        "seeds": [0],
        "datasets": [
            {"kind": "toy2d", "name": "moons", "n_train": 256, "n_test": 64},
            {"kind": "digits"},
        ],
        "methods": ["game", "minw", "wgan_gp"],
        "train": {"iters": 4, "batch_size": 32, "eval_every": 2, "n_eval": 64},
        "generator": {"latent_dim": 4, "hidden": 32, "depth": 2},
        "game": {"gamma": 2.0, "steps": 2, "feature_space": True},
        "encoder": {"latent_dim": 4, "hidden": 32, "pretrain_steps": 5},
        "wgan_gp": {"n_critic": 2, "hidden": 32, "depth": 2},
        "shift": {"noise_std": 0.1, "translate": 0.2},
    }


def test_run_dro_experiment_writes_outputs(tmp_path):
    summary = run_dro_experiment(_tiny_cfg(), tmp_path, progress=False)
    for f in (
        "results.json",
        "table.md",
        "table.csv",
        "w2_curves.png",
        "config.yaml",
        "samples_moons.png",
        "samples_digits.png",
    ):
        assert (tmp_path / f).stat().st_size > 0, f
    results = json.loads((tmp_path / "results.json").read_text())
    run = results["runs"]["digits"]["game"][0]
    assert run["iters"] == [0, 2, 4] and len(run["w2"]) == 3
    assert run["train_stats_last10pct"]["defender_cost"] > 0
    assert set(summary["datasets"]["moons"]["summary"]) == {"game", "minw", "wgan_gp"}
    assert summary["table_markdown"].count("\n") == 2 + 2 * 4  # header + 3 methods + reference
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_runs_are_reproducible():
    cfg = DROExperimentConfig.model_validate(_tiny_cfg())
    from flatgen.dro.experiment import load_experiment_data

    data = load_experiment_data(cfg.datasets[0], cfg.shift)
    a, b = (run_single(cfg, data, "game", 0) for _ in range(2))
    assert a["w2"] == b["w2"] and a["shifted_w2"] == b["shifted_w2"]
