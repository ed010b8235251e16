"""WRM (flatgen.optim.wrm): inner maximization, robust loss, certificate and its two checks."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from flatgen.config import build_config
from flatgen.data import sample_toy2d
from flatgen.optim.wrm import (
    WRMConfig,
    classifier_per_sample_loss,
    diffusion_per_sample_loss,
    loss_smoothness,
    robust_objective,
    wrm_certificate,
    wrm_loss,
    wrm_perturb,
)


def _classifier(seed: int = 0, dim: int = 5, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 32), nn.SiLU(), nn.Linear(32, classes))


def _batch(n: int = 64, dim: int = 5, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(classes, (n,), generator=g)


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
        assert robust_objective(loss, x, x0, gamma=gamma).mean().item() >= clean - 1e-6
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
    loss = diffusion_per_sample_loss(net, schedule, t=t, noise=noise)

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


# ---------------------------------------------------------------- the certificate's checks


def _quadratic(diag: list[float]):
    """loss_i(x) = 1/2 x_i^T A x_i with A = diag(...): its smoothness is max |A_jj|."""
    a = torch.tensor(diag, dtype=torch.float64)
    return lambda x: 0.5 * (x.pow(2) * a).sum(1)


def test_smoothness_estimate_of_a_quadratic_is_its_largest_absolute_eigenvalue():
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = loss_smoothness(_quadratic([4.0, 1.0, -6.0]), [x0, 2 * x0], iters=40)
    assert est == pytest.approx(6.0, rel=1e-3)
    assert est <= 6.0 + 1e-9  # ||H v|| with unit v never exceeds the true constant


def test_certificate_on_a_smooth_toy_problem_and_estimate_when_a_check_fails():
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sq = x0.pow(2).sum(1).mean().item()
    # kappa = 1, gamma = 2: x* = 4 x0 / 3 and phi = (2/3) |x0|^2, by hand
    loss = _quadratic([1.0, 1.0])
    cert = wrm_certificate(loss, x0, 2.0, rhos=[0.1], steps=60, grad_tol=1e-4)
    assert cert.robust_loss == pytest.approx(2.0 / 3.0 * sq, rel=1e-6)
    assert cert.smoothness == pytest.approx(1.0, rel=1e-6)
    assert cert.converged and cert.gamma_exceeds_smoothness and cert.label == "certificate"
    assert cert.inner_grad_norm <= 1e-4 and cert.grad_tol == 1e-4
    # too few inner steps: the ascent has not converged, so phi is underestimated
    short = wrm_certificate(loss, x0, 2.0, rhos=[0.1], steps=1, grad_tol=1e-4)
    assert not short.converged and short.gamma_exceeds_smoothness
    assert short.label == "estimate" and short.robust_loss < cert.robust_loss
    # gamma below the smoothness (kappa = 3 > gamma = 2): converged, yet only an estimate.
    # step 1 solves this quadratic exactly: x* = 4 x0, phi = (3/2 * 16 - 2 * 9) |x0|^2 = 6 |x0|^2
    rough = wrm_certificate(
        _quadratic([3.0, 3.0]), x0, 2.0, rhos=[0.1], steps=3, step_size=1.0, grad_tol=1e-4
    )
    assert rough.robust_loss == pytest.approx(6.0 * sq, rel=1e-9)
    assert rough.converged and rough.smoothness == pytest.approx(3.0, rel=1e-6)
    assert not rough.gamma_exceeds_smoothness and rough.label == "estimate"


def test_certificate_for_a_softplus_network_with_a_large_gamma():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Softplus(), nn.Linear(16, 3))
    x0, y = _batch(n=32)
    loss = classifier_per_sample_loss(model, y)
    cert = wrm_certificate(loss, x0, 5.0, rhos=[0.01], steps=40, grad_tol=1e-3)
    assert 0 < cert.smoothness < 5.0 and cert.label == "certificate", cert
    assert cert.to_dict()["label"] == "certificate"


# ---------------------------------------------------------------- config and imports


def test_method_dro_key_still_loads_into_the_moved_config():
    cfg = build_config({"method": {"dro": {"gamma": 3.0, "steps": 4}}})
    assert isinstance(cfg.method.dro, WRMConfig) and cfg.method.dro.steps == 4
    assert cfg.method.name == "wrm"


def test_importing_the_config_pulls_in_no_plotting_ot_or_dro():
    code = (
        "import flatgen.config, sys; "
        "bad = [m for m in ('matplotlib', 'ot', 'flatgen.dro') if m in sys.modules]; "
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
