"""The second-order check of the loss rise against closed forms (float64)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from flatgen.analysis import (
    ParamSpace,
    delta_between,
    expansion_summary,
    expansion_title,
    filter_pgd_ascent,
    loss_rise_check,
    plot_expansion,
)
from flatgen.analysis.params import functional_loss

pytestmark = pytest.mark.usefixtures("one_thread")
N = 5


def polynomial_problem(cubic: float = 0.0, seed: int = 0):
    """L(w) = 0.5 (w - c)'A(w - c) + cubic * sum(w^3) on w, the weight row of a Linear(N, 1)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, N, generator=g, dtype=torch.float64)
    a = q @ q.T / N - 0.2 * torch.eye(N, dtype=torch.float64)  # indefinite: a saddle is fine
    c = torch.randn(N, generator=g, dtype=torch.float64)
    model = nn.Linear(N, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, N, generator=g, dtype=torch.float64))

    def loss_fn(m: nn.Module) -> torch.Tensor:
        w = m.weight[0]
        return 0.5 * (w - c) @ a @ (w - c) + cubic * w.pow(3).sum()

    return model, loss_fn, a, c


def test_quadratic_loss_rise_is_predicted_exactly():
    model, loss_fn, a, c = polynomial_problem()
    w = model.weight[0].detach().clone()
    g = torch.Generator().manual_seed(3)
    d = [torch.randn(1, N, generator=g, dtype=torch.float64) * s for s in (1e-3, 0.1, 2.0)]

    def add_third(twin: nn.Module) -> None:  # a callable perturbing a copy in place
        twin.weight.add_(d[2])

    rows = loss_rise_check(
        model, loss_fn, {"small": [d[0]], "flat": d[1].reshape(-1), "callable": add_third}
    )
    assert [r["name"] for r in rows] == ["small", "flat", "callable"]
    for r, delta in zip(rows, d, strict=True):
        v = delta[0]
        exact = float(loss_fn_at(loss_fn, model, w + v) - loss_fn_at(loss_fn, model, w))
        assert r["measured"] == pytest.approx(exact, rel=1e-12)
        assert r["linear"] == pytest.approx(float(a @ (w - c) @ v), rel=1e-10)
        assert r["quadratic"] == pytest.approx(float(0.5 * v @ a @ v), rel=1e-10)
        assert r["predicted"] == pytest.approx(r["measured"], rel=1e-6, abs=1e-12)
        assert r["rel_error"] < 1e-6 and r["delta_norm"] == pytest.approx(float(v.norm()))
    assert torch.equal(model.weight[0], w)  # the model is not modified
    json.dumps(rows)


def loss_fn_at(loss_fn, model: nn.Module, w: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return functional_loss(model, loss_fn, {"weight": w[None]})


def test_cubic_term_is_the_error_and_grows_with_the_size():
    k = 0.3
    model, loss_fn, _, _ = polynomial_problem(cubic=k)
    u = torch.randn(1, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sizes = [1e-3, 1e-2, 1e-1, 2.0]
    rows = loss_rise_check(model, loss_fn, [[t * u] for t in sizes], kinds=["line"] * 4)
    for t, r in zip(sizes, rows, strict=True):
        # the expansion is exact but for the third-order term k * sum(delta^3)
        third = k * float((t * u).pow(3).sum())
        tol = 50 * r["loss_eps"]  # the measured rise is a difference of two rounded losses
        assert r["measured"] - r["predicted"] == pytest.approx(third, rel=1e-6, abs=tol)
    errors = [r["rel_error"] for r in rows]
    assert errors == sorted(errors) and errors[0] < 1e-2 < errors[-1]
    # while g.delta = O(t) dominates the rise, the O(t^3) error is O(t^2) relative to it
    assert errors[1] / errors[0] == pytest.approx(100, rel=0.05)
    s = expansion_summary(rows, tolerance=0.25)
    within = [e <= 0.25 for e in errors]
    assert s["n_within"] == sum(within) and s["by_kind"]["line"]["n"] == 4
    assert s["holds_below"] == rows[within.index(False) - 1]["delta_norm"]


def test_delta_of_a_perturbed_copy_and_the_worst_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(32, 3, dtype=torch.float64)
    y = torch.randn(32, 1, dtype=torch.float64)

    def loss_fn(m):
        return (m(x) - y).pow(2).mean()

    def round_weights(twin: nn.Module) -> nn.Module:  # a quantizer-like weight perturbation
        for p in twin.parameters():
            p.copy_(torch.round(p * 16) / 16)
        return twin

    with torch.no_grad():
        twin = round_weights(copy.deepcopy(model))
    delta = delta_between(model, twin)
    for d, p, q in zip(delta, model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p + d, q)
    worst = filter_pgd_ascent(model, loss_fn, 1e-3, steps=3)
    rows = loss_rise_check(
        model, loss_fn, [round_weights, ParamSpace(model).split(worst.delta)],
        names=["round", "worst"],
    )  # fmt: skip
    assert rows[1]["measured"] == pytest.approx(worst.loss - worst.loss0, rel=1e-9)
    assert rows[1]["rel_error"] < 1e-2  # a tiny ball: the expansion holds
    with pytest.raises(ValueError, match="shapes"):
        loss_rise_check(model, loss_fn, [[torch.zeros(2)]])
    with pytest.raises(ValueError, match="lacks parameters"):
        delta_between(model, nn.Linear(3, 4))


def test_plot_says_where_the_expansion_holds(tmp_path):
    model, loss_fn, _, _ = polynomial_problem(cubic=0.3)
    u = torch.randn(1, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = loss_rise_check(model, loss_fn, [[t * u] for t in (1e-3, 4.0)], kinds=["noise"] * 2)
    b = loss_rise_check(model, loss_fn, [[-1e-2 * u]], kinds=["quant"])
    title = expansion_title(a + b)
    assert title.startswith("2nd-order prediction within 25%: 2/3 (noise 1/2, quant 1/1)")
    path = plot_expansion({"adm": a, "sam": b}, tmp_path / "expansion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
