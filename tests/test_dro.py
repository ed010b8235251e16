"""Wasserstein DRO game: minibatch OT, defenders, the game and its baselines, the harness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from scipy.optimize import linear_sum_assignment

from flatgen.data import sample_toy2d
from flatgen.dro import (
    DROExperimentConfig,
    DROGame,
    MLPGenerator,
    OTDistance,
    defend,
    exact_w2,
    ot_cost,
    per_sample_ot_cost,
    run_dro_experiment,
    w2_oscillation,
)
from flatgen.dro.baselines import ns_gan_d_loss, ns_gan_g_loss
from flatgen.dro.config import ShiftConfig
from flatgen.dro.experiment import run_single, shift_data
from flatgen.dro.game import dual_update

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


def test_dual_update_moves_gamma_toward_the_budget():
    assert dual_update(2.0, cost=0.1, radius=0.1, lr=0.5) == 2.0  # on budget: unchanged
    up = dual_update(2.0, cost=0.2, radius=0.1, lr=0.5)
    assert up == pytest.approx(2.0 * math.exp(0.5))  # over budget: a larger penalty
    assert dual_update(2.0, cost=0.0, radius=0.1, lr=0.5) == pytest.approx(2.0 * math.exp(-0.5))


@pytest.mark.parametrize("gamma0", [0.3, 30.0])
def test_defenders_meet_their_radius_from_any_start(gamma0):
    real = sample_toy2d("8gaussians", 128, seed=0)
    torch.manual_seed(0)
    gen = MLPGenerator(4, 2, hidden=32, depth=2)
    radius = 0.05
    game = DROGame(gen, 4, gamma=gamma0, steps=3, lr=1e-3, seed=0, radius=radius, dual_lr=0.5)
    costs = [game.step(lambda: real)["defender_cost"] for _ in range(60)]
    late = sum(costs[-20:]) / 20
    assert abs(costs[0] - radius) > 0.5 * radius  # it started off budget
    assert late == pytest.approx(radius, rel=0.15), (costs[0], late, game.gamma)
    fixed = DROGame(gen, 4, gamma=gamma0, steps=3, seed=0)  # no radius: gamma stays put
    fixed.step(lambda: real)
    assert fixed.gamma == gamma0


def test_ns_gan_losses_are_the_binary_cross_entropies():
    g = torch.Generator().manual_seed(0)
    d_real, d_fake = torch.randn(16, generator=g), torch.randn(16, generator=g)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(d_real, torch.ones(16)) + bce(d_fake, torch.zeros(16))
    torch.testing.assert_close(ns_gan_d_loss(d_real, d_fake), expected_d)
    torch.testing.assert_close(ns_gan_g_loss(d_fake), bce(d_fake, torch.ones(16)))


def test_w2_oscillation_by_hand():
    iters = [0, 10, 20, 30, 40]
    osc = w2_oscillation(iters, [9.0, 5.0, 3.0, 4.0, 2.5])  # last half: 3.0, 4.0, 2.5
    assert osc == {"mean_abs_diff": pytest.approx(1.25), "total_variation": pytest.approx(2.5)}
    flat = w2_oscillation(iters, [9.0, 5.0, 3.0, 3.0, 3.0])
    assert flat["mean_abs_diff"] == 0.0 and flat["total_variation"] == 0.0
    assert w2_oscillation([0, 10], [1.0, 2.0])["mean_abs_diff"] is None  # one point in the half


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
        "methods": ["game", "minw", "wgan_gp", "ns_gan"],
        "train": {"iters": 4, "batch_size": 32, "eval_every": 2, "n_eval": 64},
        "generator": {"latent_dim": 4, "hidden": 32, "depth": 2},
        "game": {"gamma": 2.0, "steps": 2, "feature_space": True, "radius": 0.05},
        "ns_gan": {"hidden": 32, "depth": 2},
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
    assert run["defenders"]["radius"] == 0.05 and run["defenders"]["cost_last_half"] > 0
    assert run["w2_oscillation"] == pytest.approx(abs(run["w2"][2] - run["w2"][1]))
    moons = summary["datasets"]["moons"]["summary"]
    assert set(moons) == {"game", "minw", "wgan_gp", "ns_gan"}
    assert moons["game"]["defender_radius"] == 0.05 and "defender_radius" not in moons["minw"]
    assert moons["ns_gan"]["final_w2_seed_sd"] is None  # one seed: no spread
    assert moons["ns_gan"]["w2_oscillation_mean"] >= 0
    assert summary["table_markdown"].count("\n") == 2 + 2 * 5  # header + 4 methods + reference
    assert "/ 0.05 |" in summary["table_markdown"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_runs_are_reproducible():
    cfg = DROExperimentConfig.model_validate(_tiny_cfg())
    from flatgen.dro.experiment import load_experiment_data

    data = load_experiment_data(cfg.datasets[0], cfg.shift)
    a, b = (run_single(cfg, data, "game", seed=0) for _ in range(2))
    assert a["w2"] == b["w2"] and a["shifted_w2"] == b["shifted_w2"]
