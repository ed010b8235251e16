"""flatgen.analysis against exact answers on a tiny MLP (266 parameters, float64 unless noted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from flatgen.analysis import (
    HessianOperator,
    MatrixOperator,
    ParamSpace,
    average_case_sharpness,
    filter_normalize,
    hessian_eigenvalues,
    hessian_eigenvalues_per_layer,
    hessian_spectral_density,
    hessian_trace,
    hutchinson,
    hutchpp,
    lanczos_eigs,
    load_landscape,
    loss_landscape,
    losses_at,
    parameter_groups,
    random_direction,
    save_landscape,
    sharpness_summary,
    slq,
    worst_case_sharpness,
)
from flatgen.analysis.params import functional_loss
from flatgen.diffusion import NoiseSchedule, fixed_diffusion_loss_fn
from flatgen.models import TimeMLP

# tiny Hessian products: one thread is several times faster (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem(dtype: torch.dtype = torch.float64, dropout: float = 0.0):
    torch.manual_seed(0)
    model = TimeMLP(dim=2, hidden=12, depth=2, emb_dim=4, dropout=dropout).to(dtype)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)).to(dtype)
    return model, fixed_diffusion_loss_fn(x0, NoiseSchedule(), draws=1, seed=0)


def exact_hessian(model: nn.Module, loss_fn) -> torch.Tensor:
    space = ParamSpace(model)
    was = model.training
    model.eval()
    h = torch.func.hessian(lambda f: functional_loss(model, loss_fn, space.to_dict(f)))(
        space.flat()
    )
    model.train(was)
    return h.detach()


@pytest.fixture(scope="module")
def problem():
    model, loss_fn = tiny_problem()
    h = exact_hessian(model, loss_fn)
    return model, loss_fn, h, torch.linalg.eigvalsh(h)


def test_hvp_matches_exact_hessian_both_formulations(problem):
    model, loss_fn, h, _ = problem
    v = torch.randn(h.shape[0], dtype=h.dtype, generator=torch.Generator().manual_seed(3))
    for method in ("reverse", "forward"):
        with HessianOperator(model, loss_fn, method=method) as op:
            assert op.n == h.shape[0] == 266
            torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_top_k_eigenvalues_match_eigvalsh(problem, dtype):
    model, loss_fn, _, ev = problem
    if dtype != torch.float64:
        model, loss_fn = tiny_problem(dtype)
    vals, vecs = hessian_eigenvalues(model, loss_fn, k=5)
    exact = ev.flip(0)[:5]
    assert vals.shape == (5,) and vecs.shape == (5, 266)
    assert torch.all((vals - exact).abs() <= 1e-3 * exact.abs())
    # the vectors are eigenvectors: unit norm, H v ~ lambda v for the separated top pair
    h = exact_hessian(model, loss_fn).double()
    torch.testing.assert_close(vecs.norm(dim=1).double(), torch.ones(5, dtype=torch.float64))
    v0 = vecs[0].double()
    assert (h @ v0 - vals[0] * v0).norm() <= 1e-3 * vals[0]


def test_smallest_and_largest_magnitude(problem):
    model, loss_fn, _, ev = problem
    res = hessian_eigenvalues(model, loss_fn, k=3, which="SA", tol=1e-6, max_iter=200)
    torch.testing.assert_close(res.vals, ev[:3], rtol=1e-5, atol=0)
    res = hessian_eigenvalues(model, loss_fn, k=2, which="LM", tol=1e-6)
    exact = ev[ev.abs().argsort(descending=True)[:2]]
    torch.testing.assert_close(res.vals, exact, rtol=1e-5, atol=0)
    assert res.converged and res.n_matvecs < 266


def test_lanczos_exact_on_low_rank_and_full_basis():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 3, dtype=torch.float64, generator=g)
    mat = a @ a.T  # rank 3: Lanczos breaks down after 3 steps and must restart
    res = lanczos_eigs(MatrixOperator(mat), k=4, tol=1e-10)
    exact = torch.linalg.eigvalsh(mat).flip(0)[:4]
    torch.testing.assert_close(res.vals, exact, rtol=1e-8, atol=1e-8)


def test_per_layer_top_eigenvalue_matches_exact_blocks(problem):
    model, loss_fn, h, _ = problem
    groups = parameter_groups(model, "module")
    assert list(groups) == ["net.0", "net.2", "net.4"]
    got = hessian_eigenvalues_per_layer(model, loss_fn, groups="module", tol=1e-6)
    space = ParamSpace(model)
    seg = dict(space.segments())
    for name, params in groups.items():
        idx = torch.cat([torch.arange(seg[p].start, seg[p].stop) for p in params])
        exact = torch.linalg.eigvalsh(h[idx][:, idx])[-1]
        assert abs(got[name] - float(exact)) <= 1e-5 * abs(float(exact))
    # per-parameter grouping works too (weight and bias blocks separately)
    per_param = hessian_eigenvalues_per_layer(model, loss_fn, groups="param")
    assert set(per_param) == set(space.names)
    # depth 1: one group holding everything, whose block is the whole Hessian
    assert parameter_groups(model, 1) == {"net": space.names}
    whole = hessian_eigenvalues_per_layer(model, loss_fn, groups=1, tol=1e-6)
    assert whole["net"] == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-5)


def test_trace_estimates_within_stated_tolerance(problem):
    model, loss_fn, h, _ = problem
    exact = float(h.trace())
    for method in ("hutchinson", "hutch++"):
        tr = hessian_trace(model, loss_fn, method=method, n_matvecs=150, seed=1)
        assert float(tr) == tr.estimate and tr.n_matvecs == 150 and tr.stderr > 0
        # unbiased estimators: within 4 standard errors (and the stderr itself is ~10%)
        assert abs(tr.estimate - exact) <= 4 * tr.stderr
        assert tr.stderr <= 0.2 * abs(exact)


def test_hutchpp_exact_when_sketch_spans_the_space():
    g = torch.Generator().manual_seed(0)
    mat = torch.randn(30, 30, dtype=torch.float64, generator=g)
    mat = mat + mat.T
    res = hutchpp(MatrixOperator(mat), n_matvecs=90)  # sketch of 30 = the whole space
    assert res.estimate == pytest.approx(float(mat.trace()), abs=1e-9)


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    n, m = 200, 30
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    lam = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 2
    op = MatrixOperator(q @ torch.diag(lam) @ q.T)
    exact = float(lam.sum())
    err_h = np.mean([abs(hutchinson(op, m, seed=s).estimate - exact) for s in range(20)])
    err_pp = np.mean([abs(hutchpp(op, m, seed=s).estimate - exact) for s in range(20)])
    assert err_pp < 0.5 * err_h


def test_slq_density_integrates_to_one_and_has_mean_trace_over_n(problem):
    _, _, h, ev = problem
    n = h.shape[0]
    # a diagonal matrix: every Rademacher quadratic form equals the trace, so the mean is exact
    diag = torch.linspace(-1.0, 5.0, n, dtype=torch.float64)
    d = slq(MatrixOperator(torch.diag(diag)), n_iter=30, n_probes=2)
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    assert d.mean() == pytest.approx(float(diag.mean()), rel=1e-10)
    # the Hessian: mean within 4 standard errors of trace / n, mass inside the spectrum
    d = slq(MatrixOperator(h), n_iter=40, n_probes=48, seed=2)
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    per_probe = np.sum(d.nodes * d.weights, axis=1)
    stderr = per_probe.std(ddof=1) / math.sqrt(len(per_probe))
    assert abs(d.mean() - float(h.trace()) / n) <= 4 * stderr
    assert d.nodes.min() >= float(ev[0]) - 1e-8 and d.nodes.max() <= float(ev[-1]) + 1e-8
    # nodes of a long enough run reach the extreme eigenvalues
    assert d.nodes.max() == pytest.approx(float(ev[-1]), rel=1e-6)


def test_spectral_density_from_model(problem):
    model, loss_fn, _, _ = problem
    d = hessian_spectral_density(model, loss_fn, n_iter=20, n_probes=2, grid_size=256)
    assert d.grid.shape == d.density.shape == (256,)
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)
    assert json.loads(json.dumps(d.to_dict()))["n_matvecs"] == 40


def test_filter_normalization_matches_filter_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.GroupNorm(1, 5), nn.Flatten(), nn.Linear(5, 4))
    space = ParamSpace(model)
    d = space.to_dict(random_direction(model, 0, bias="zero"))
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            w_norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            d_norms = d[name].reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(d_norms, w_norms)
        else:  # biases and norm parameters are zeroed by default
            assert torch.all(d[name] == 0)
    bias = model[3].bias
    assert torch.equal(filter_normalize(torch.randn(4), bias, "copy"), bias.detach())
    scaled = filter_normalize(torch.randn(4), bias, "filter")
    assert float(scaled.norm()) == pytest.approx(float(bias.detach().norm()), rel=1e-6)
    # the same seed gives the same direction
    assert torch.equal(random_direction(model, 7), random_direction(model, 7))


@pytest.mark.parametrize("dim", [1, 2])
def test_landscape_origin_is_the_loss(problem, dim):
    model, loss_fn, _, _ = problem
    ls = loss_landscape(model, loss_fn, dim=dim, grid=5, span=0.5, vectorize=False)
    with torch.no_grad():
        loss = float(loss_fn(model))
    center = (2,) * dim
    assert ls.loss0 == loss
    assert ls.losses[center] == loss  # exactly: the origin is w + 0 * d
    assert ls.losses.shape == (5,) * dim and ls.coords[0][2] == 0.0
    assert not np.allclose(ls.losses, loss)  # the directions do move the loss
    batched = loss_landscape(model, loss_fn, dim=dim, grid=5, span=0.5, vectorize=True)
    assert batched.losses[center] == pytest.approx(loss, rel=1e-12)


def test_batched_landscape_equals_point_by_point():
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        model, loss_fn = tiny_problem(dtype)
        space = ParamSpace(model)
        dirs = torch.stack([random_direction(model, s) for s in (0, 1)])
        coords = torch.randn(11, 2, generator=torch.Generator().manual_seed(0))
        batched = losses_at(
            model, loss_fn, dirs, coords=coords, space=space, batch_points=4, vectorize=True
        )
        single = losses_at(model, loss_fn, dirs, coords=coords, space=space, vectorize=False)
        # and point by point the plain way: weights written into the model
        manual = []
        w = space.flat()
        with torch.no_grad():
            for c in coords:
                for p, x in zip(space.params, space.split(w + c.to(dtype) @ dirs), strict=True):
                    p.copy_(x)
                manual.append(float(loss_fn(model)))
            for p, x in zip(space.params, space.split(w), strict=True):
                p.copy_(x)
        np.testing.assert_allclose(batched, single, rtol=rtol)
        np.testing.assert_allclose(single, manual, rtol=rtol)


def test_landscape_save_load_and_plots(problem, tmp_path):
    from flatgen.analysis import plot_landscape, plot_sharpness

    model, loss_fn, _, _ = problem
    ls = loss_landscape(model, loss_fn, dim=2, grid=5, seed=3)
    path = save_landscape(ls, tmp_path / "eval" / "landscape.npz")
    back = load_landscape(path)
    assert np.array_equal(back.losses, ls.losses) and back.loss0 == ls.loss0
    assert back.meta["seed"] == 3 and back.meta["bias"] == "zero" and back.dim == 2
    png = plot_landscape(back, tmp_path / "eval" / "landscape.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    line = loss_landscape(model, loss_fn, dim=1, grid=5)
    assert plot_landscape(line, tmp_path / "line.png").stat().st_size > 0
    summary = {
        "lambda_max": 1.0,
        "worst_case": {"rho": [0.1, 0.2], "increase": [0.01, 0.03]},
        "average_case": {"sigma": [0.1, 0.2], "increase": [0.0, 0.01], "std": [0.0, 0.01]},
        "density": {"grid": [0.0, 1.0, 2.0], "density": [0.1, 0.8, 0.1]},
    }
    assert plot_sharpness(summary, tmp_path / "sharpness.png").stat().st_size > 0


def test_worst_case_perturbation_stays_in_ball_and_increases_loss(problem):
    model, loss_fn, _, _ = problem
    before = ParamSpace(model).flat()
    rhos = [0.01, 0.05, 0.2]
    curve = worst_case_sharpness(model, loss_fn, rhos, steps=4)
    assert curve.radii == rhos
    for rho, norm, inc in zip(rhos, curve.norms, curve.increase, strict=True):
        assert 0 < norm <= rho * (1 + 1e-9)
        assert inc > 0
    assert curve.increase == sorted(curve.increase)
    # a worst case beats random directions of the same L2 size
    g = torch.Generator().manual_seed(0)
    space = ParamSpace(model)
    for _ in range(5):
        d = torch.randn(space.n, dtype=torch.float64, generator=g)
        d = 0.2 * d / d.norm()
        with torch.no_grad():
            rand = float(functional_loss(model, loss_fn, space.to_dict(before + d)))
        assert rand < curve.losses[-1]
    assert torch.equal(ParamSpace(model).flat(), before)  # weights untouched


def test_average_case_curve(problem):
    model, loss_fn, _, _ = problem
    curve = average_case_sharpness(model, loss_fn, sigmas=[0.0, 0.1, 0.5], draws=4)
    assert curve.losses[0] == pytest.approx(curve.loss0, rel=1e-12)
    assert curve.std[0] == pytest.approx(0.0, abs=1e-12) and curve.std[2] > 0
    assert curve.increase[2] > curve.increase[1]
    assert set(curve.to_dict()) >= {"sigma", "loss0", "loss", "increase", "std"}


def test_modes_restored_and_dropout_off_inside():
    model, loss_fn = tiny_problem(dropout=0.5)
    model.train()
    a = hessian_eigenvalues(model, loss_fn, k=2, tol=1e-8).vals
    b = hessian_eigenvalues(model, loss_fn, k=2, tol=1e-8).vals
    torch.testing.assert_close(a, b, rtol=1e-10, atol=0)  # deterministic: dropout was off
    assert model.training and all(m.training for m in model.modules())
    ls = loss_landscape(model, loss_fn, dim=1, grid=3)
    assert ls.losses[1] == ls.loss0 and model.training


def test_sharpness_summary_is_json(problem):
    model, loss_fn, _, ev = problem
    stages = set()
    s = sharpness_summary(
        model, loss_fn, top_k=3, trace=True, density=True, per_layer=True,
        rhos=[0.05], sigmas=[0.05], trace_matvecs=30, density_iter=10, draws=2,
        progress=lambda stage, done, total: stages.add(stage),
    )  # fmt: skip
    s = json.loads(json.dumps(s))
    assert s["lambda_max"] == pytest.approx(float(ev[-1]), rel=1e-3)
    assert len(s["top_k"]) == 3 and s["n_params"] == 266
    assert s["trace"]["method"] == "hutch++" and set(s["per_layer"]) == {"net.0", "net.2", "net.4"}
    assert s["worst_case"]["increase"][0] > 0 and len(s["density"]["grid"]) == 512
    assert stages == {"eigenvalues", "trace", "per-layer", "worst-case", "noise", "density"}


def test_batchnorm_uses_running_statistics_and_is_not_updated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).double()
    model[1].running_mean.fill_(0.3)
    model[1].running_var.fill_(2.0)
    x = torch.randn(16, 3, dtype=torch.float64)

    def loss_fn(m: nn.Module) -> torch.Tensor:
        return m(x).pow(2).mean()

    model.train()
    before = model[1].running_mean.clone()
    vals, _ = hessian_eigenvalues(model, loss_fn, k=2, tol=1e-8)
    worst_case_sharpness(model, loss_fn, [0.1], steps=2)
    assert torch.equal(model[1].running_mean, before) and model.training
    h = exact_hessian(model, loss_fn)  # eval-mode Hessian (running statistics)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(h).flip(0)[:2], rtol=1e-6, atol=0)
