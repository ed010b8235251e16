"""The second-order check's honest reading (issue 18 item 7): what lambda_max alone predicts of
the loss rise, what the full second order predicts, on losses whose Hessian is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flatgen.analysis import expansion_regression, loss_rise_check, plot_expansion_regression
from flatgen.analysis.plots import expansion_regression_figure

pytestmark = pytest.mark.usefixtures("one_thread")
N = 40


def quadratic(eigenvalues: torch.Tensor, seed: int = 0, *, at_minimum: bool = False):
    """L(w) = 0.5 (w - c)'H(w - c), H = Q diag(eigenvalues) Q' with a random rotation Q; w
    random, or w = c (g = 0: the rise is the quadratic term alone)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    h = q @ torch.diag(eigenvalues) @ q.T
    c = torch.randn(N, generator=g, dtype=torch.float64)
    model = nn.Linear(N, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(c[None] if at_minimum else torch.randn(1, N, generator=g).double())

    def loss_fn(m: nn.Module) -> torch.Tensor:
        d = m.weight[0] - c
        return 0.5 * d @ h @ d

    return model, loss_fn, q


def random_deltas(n: int, seed: int) -> list[list[torch.Tensor]]:
    """Uniformly random directions with norms uniform in [0.05, 0.5]: nothing aimed at any
    eigenvector, and sizes that vary (so that ||delta||^2 has something to explain)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        u = torch.randn(1, N, generator=g, dtype=torch.float64)
        size = 0.05 + 0.45 * torch.rand((), generator=g, dtype=torch.float64)
        out.append([u / u.norm() * size])
    return out


def test_quadratic_full_prediction_is_exact_with_slope_one():
    eig = torch.linspace(0.1, 3.0, N, dtype=torch.float64)
    model, loss_fn, _ = quadratic(eig)
    rows = loss_rise_check(model, loss_fn, random_deltas(25, 1), lambda_max=float(eig.max()))
    reg = expansion_regression(rows)
    full = reg["second_order"]
    assert full["n"] == 25 and (full["x"], full["y"]) == ("predicted", "measured")
    assert full["r2"] == pytest.approx(1.0, abs=1e-10)
    assert full["slope"] == pytest.approx(1.0, abs=1e-8)
    assert full["intercept"] == pytest.approx(0.0, abs=1e-10)
    assert reg["lambda_max"]["n"] == 25 and reg["quality"] is None


def test_lambda_max_does_not_predict_where_one_eigenvalue_stands_out():
    # one large eigenvalue and many small ones: a random delta's rise is set by its chance
    # overlap with the top eigenvector, which ||delta|| does not see (a planted failure)
    eig = torch.full((N,), 0.01, dtype=torch.float64)
    eig[0] = 50.0
    model, loss_fn, _ = quadratic(eig, at_minimum=True)
    rows = loss_rise_check(model, loss_fn, random_deltas(60, 2), lambda_max=50.0)
    reg = expansion_regression(rows)
    assert reg["second_order"]["r2"] > 0.999999
    assert reg["lambda_max"]["r2"] < 0.5  # lambda_max ||delta||^2 misses most of the variance
    # the same check on a spectrum without an outlier: there ||delta|| carries the rise
    # (the control: the low R^2 above is the spectrum's doing, not the regression's)
    flat_model, flat_loss, _ = quadratic(torch.linspace(1.0, 2.0, N, dtype=torch.float64),
                                         at_minimum=True)
    flat_rows = loss_rise_check(flat_model, flat_loss, random_deltas(60, 2), lambda_max=2.0)
    assert expansion_regression(flat_rows)["lambda_max"]["r2"] > 0.9


def test_quality_rise_on_loss_rise_and_undefined_fits():
    rows = [{"measured": m, "predicted": m, "quality_rise": 3 * m + 1, "kind": "q"}
            for m in (0.1, 0.2, 0.5, 0.9)]
    rows.append({"measured": 0.3, "predicted": 0.3, "kind": "w"})  # no quality: left out
    q = expansion_regression(rows)["quality"]
    assert (q["n"], q["x"], q["y"]) == (4, "measured", "quality_rise")
    assert q["slope"] == pytest.approx(3.0) and q["intercept"] == pytest.approx(1.0)
    one = expansion_regression(rows[:1])
    assert one["second_order"]["n"] == 1 and one["second_order"]["r2"] is None
    assert one["lambda_max"] is None
    assert expansion_regression([])["second_order"] is None


def test_plot_draws_both_regressions_with_r2_outside_the_data(tmp_path):
    eig = torch.full((N,), 0.01, dtype=torch.float64)
    eig[0] = 50.0
    model, loss_fn, _ = quadratic(eig, at_minimum=True)
    rows = loss_rise_check(model, loss_fn, random_deltas(20, 3), lambda_max=50.0)
    for i, r in enumerate(rows):
        r["quality_rise"] = 2.0 * r["measured"] + 0.01 * i
    fig = expansion_regression_figure(rows)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    main = fig.axes[0]
    texts = [t.get_text() for t in main.get_legend().get_texts()]
    assert len(texts) == 2 and all("R² = " in t for t in texts)
    assert any(t.startswith("λmax") for t in texts)
    assert len(main.lines) == 2  # both fitted lines drawn
    for ax in fig.axes:  # each legend sits below its axes, clear of the data
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 < ax.get_window_extent(renderer).y0
        assert all(t.get_fontsize() >= 9 for t in ax.get_legend().get_texts())
    path = plot_expansion_regression({"adm": rows}, tmp_path / "regression.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
