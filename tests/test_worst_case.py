"""The worst-case ascent in filter-normalized balls against closed forms (float64)."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from flatgen.analysis import (
    Filters,
    ParamSpace,
    filter_normalize,
    filter_pgd_ascent,
    filter_worst_case_sharpness,
    sharpness_summary,
    worst_case_sharpness,
)
from flatgen.analysis.params import functional_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic_problem(n: int = 6, seed: int = 0):
    """L(w) = 0.5 (w - c)' A (w - c) on w, the one row (one filter) of a Linear(n, 1)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = q @ q.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(n, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, n, generator=g, dtype=torch.float64))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        d = m.weight[0] - c
        return 0.5 * d @ a @ d

    return model, loss_fn, a, c


def trust_region_max(g: torch.Tensor, a: torch.Tensor, radius: float) -> float:
    """max g'd + 0.5 d'Ad over ||d|| <= radius (A positive definite): d = (lam I - A)^-1 g on
    the sphere, lam > lambda_max(A) the root of the secular equation ||d(lam)|| = radius."""
    ev, v = torch.linalg.eigh(a)
    gt = v.T @ g
    top = float(ev.max())

    def excess(lam: float) -> float:
        return float(((gt / (lam - ev)) ** 2).sum()) - radius**2

    lam = brentq(excess, top + 1e-12, top + float(g.norm()) / radius + 1.0, xtol=1e-14)
    d = v @ (gt / (lam - ev))
    return float(g @ d + 0.5 * d @ a @ d)


@pytest.mark.parametrize("rho", [0.05, 0.3])
def test_pgd_reaches_the_analytic_max_of_an_l2_ball(rho):
    # one filter: the filter-normalized ball is the L2 ball of radius rho * ||w||
    model, loss_fn, a, c = quadratic_problem()
    w = model.weight[0].detach().clone()
    g = a @ (w - c)
    radius = rho * float(w.norm())
    exact = trust_region_max(g, a, radius)
    d1 = radius * g / g.norm()  # SAM's one step
    one_step = float(g @ d1 + 0.5 * d1 @ a @ d1)
    assert exact > one_step * (1 + 1e-4)  # the one step misses the max here
    found = filter_pgd_ascent(model, loss_fn, rho, steps=20, seed=1)
    rise = found.loss - found.loss0
    sam = worst_case_sharpness(model, loss_fn, [radius], steps=1).increase[0]
    assert sam == pytest.approx(one_step, rel=1e-10)
    assert one_step < rise <= exact * (1 + 1e-12)
    assert rise == pytest.approx(exact, rel=1e-6)
    assert float(found.delta.norm()) == pytest.approx(radius, rel=1e-9)
    assert torch.equal(model.weight[0], w)  # the model is not modified


def small_net() -> tuple[nn.Module, callable]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 1)
    ).double()
    x = torch.randn(16, 2, 4, 4, dtype=torch.float64)
    y = torch.randn(16, 1, dtype=torch.float64)
    return model, lambda m: (m(x) - y).pow(2).mean()


def filter_ratios(model: nn.Module, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    space = ParamSpace(model)
    out = {}
    for (name, p), d in zip(model.named_parameters(), space.split(delta), strict=True):
        rows = (lambda t: t.reshape(t.shape[0], -1)) if p.ndim >= 2 else (lambda t: t[None])
        out[name] = rows(d).norm(dim=1) / rows(p.detach()).norm(dim=1)
    return out


@pytest.mark.parametrize("bias", ["zero", "filter"])
def test_every_filter_stays_in_its_ball(bias):
    model, loss_fn = small_net()
    rho = 0.1
    found = filter_pgd_ascent(model, loss_fn, rho, steps=8, bias=bias)
    ratios = filter_ratios(model, found.delta)
    for name, r in ratios.items():
        if name.endswith("bias") and bias == "zero":
            assert torch.all(r == 0), name  # 1-D parameters are left out
        else:
            assert torch.all(r <= rho * (1 + 1e-9)), name
    assert max(float(r.max()) for r in ratios.values()) == pytest.approx(found.filter_ratio)
    assert found.filter_ratio == pytest.approx(rho, rel=1e-9)  # a worst case sits on the edge
    # it beats random points on the ball's surface
    space, w = ParamSpace(model), ParamSpace(model).flat()
    filters = Filters(space, bias)
    gen = torch.Generator().manual_seed(5)
    for _ in range(10):
        d = filters.normalize(torch.randn(space.n, generator=gen, dtype=torch.float64), rho)
        with torch.no_grad():
            assert float(functional_loss(model, loss_fn, space.to_dict(w + d))) < found.loss


def test_filters_normalize_is_filter_normalize():
    model, _ = small_net()
    space = ParamSpace(model)
    d = torch.randn(space.n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for bias in ("zero", "filter"):
        pairs = zip(space.split(d), space.params, strict=True)
        expected = torch.cat([filter_normalize(x, p, bias).reshape(-1) for x, p in pairs])
        torch.testing.assert_close(Filters(space, bias).normalize(d), expected)
    with pytest.raises(ValueError, match="copy"):
        Filters(space, "copy")


def test_curve_and_summary_label_the_ascent():
    model, loss_fn = small_net()
    curve = filter_worst_case_sharpness(model, loss_fn, [0.0, 0.02, 0.1], steps=4)
    d = json.loads(json.dumps(curve.to_dict()))
    assert d["ascent"] == "pgd-filter" and d["ball"] == "filter"
    assert d["increase"][0] == 0.0 and 0 < d["increase"][1] < d["increase"][2]
    assert d["filter_ratio"][1:] == pytest.approx([0.02, 0.1], rel=1e-9)
    assert worst_case_sharpness(model, loss_fn, [0.1], steps=2).to_dict()["ascent"] == "sam-ascent"
    s = sharpness_summary(model, loss_fn, top_k=0, trace=False, rhos=[0.05], sigmas=[])
    assert s["worst_case"]["ascent"] == "pgd-filter"
    assert set(s["worst_case"]) >= {"rho", "loss0", "loss", "increase", "norm"}
    sam = sharpness_summary(
        model, loss_fn, top_k=0, trace=False, rhos=[0.05], sigmas=[], ascent="sam-ascent"
    )
    assert sam["worst_case"]["ball"] == "l2"
    assert sam["settings"]["worst_case_ascent"] == "sam-ascent"
    with pytest.raises(ValueError, match="unknown worst-case ascent"):
        sharpness_summary(model, loss_fn, top_k=0, trace=False, ascent="sam")


def test_zero_filters_stay_put_in_float32():
    # diffusion U-Nets zero-initialize their output layer: its filters have a ball of radius 0
    model, _ = small_net()
    model = model.float()
    with torch.no_grad():
        model[3].weight[:2].zero_()
    x = torch.randn(16, 2, 4, 4)

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return m(x).pow(2).mean()

    found = filter_pgd_ascent(model, loss_fn, 0.05, steps=3)
    assert found.filter_ratio == pytest.approx(0.05, rel=1e-5)
    delta = dict(zip(ParamSpace(model).names, ParamSpace(model).split(found.delta), strict=True))
    assert torch.all(delta["3.weight"][:2] == 0) and torch.any(delta["3.weight"][2:] != 0)
