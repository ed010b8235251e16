"""No work done twice in the flatness measurement (issue 22): the expansion check reuses the
sharpness summary's worst-case ascents (bit for bit) and its Hessian operator (one gradient
graph), and the average-case sharpness runs no vmap timing trial on a CPU."""

from __future__ import annotations

import json

import pytest
import torch

from flatgen.analysis import (
    HessianOperator,
    filter_pgd_ascent,
    hessian_eigenvalues,
    hessian_trace,
    sharpness_summary,
)
from flatgen.analysis import hvp as hvp_module
from flatgen.analysis.perturbation import average_case_sharpness
from flatgen.robustness.settings import RobustnessSettings
from flatgen.study.expansion import EXPANSION_SEED, expansion_check
from tests.test_analysis import exact_hessian, tiny_problem
from tests.test_robustness import small_convnet

pytestmark = pytest.mark.usefixtures("one_thread")
RHOS = [0.02, 0.1]


def convnet_problem():
    model = small_convnet()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(16, 2, 4, 4, generator=g), torch.randn(16, 5, generator=g)

    def loss_fn(m):
        return (m(x) - y).pow(2).mean()

    return model, loss_fn


SETTINGS = RobustnessSettings(bits=[8, 4], granularity=["tensor"], noise_sigmas=[0.05])


def test_expansion_check_reuses_the_summary_ascents_bitwise():
    model, loss_fn = convnet_problem()
    flat = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=6, rhos=RHOS, sigmas=[],
                             seed=EXPANSION_SEED)
    json.dumps(flat)  # the deltas ride along as attributes, not as JSON
    assert sorted(flat.ascents) == RHOS
    for rho in RHOS:  # the ascent the expansion check used to rerun, with its own inputs
        again = filter_pgd_ascent(model, loss_fn, rho, seed=EXPANSION_SEED)
        assert torch.equal(again.delta, flat.ascents[rho].delta)
        assert again.loss == flat.ascents[rho].loss
    plain = expansion_check(model, loss_fn, settings=SETTINGS, rhos=RHOS)
    reused = expansion_check(model, loss_fn, settings=SETTINGS, rhos=RHOS, ascents=flat.ascents)
    assert reused == plain  # identical rows, every float
    assert [r["kind"] for r in plain][-2:] == ["worst case (filter ball)"] * 2
    # ascents run with another seed are not the check's: refused, not silently used
    other = sharpness_summary(model, loss_fn, top_k=0, trace=False, rhos=RHOS, sigmas=[], seed=3)
    with pytest.raises(ValueError, match="ran with"):
        expansion_check(model, loss_fn, settings=SETTINGS, rhos=RHOS, ascents=other.ascents)


def test_one_operator_serves_summary_and_expansion(monkeypatch):
    model, loss_fn = convnet_problem()
    plain_summary = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=6, rhos=RHOS,
                                      sigmas=[0.05], draws=2)
    plain_rows = expansion_check(model, loss_fn, settings=SETTINGS, rhos=RHOS)
    built = []
    init = hvp_module.HessianOperator.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(hvp_module.HessianOperator, "__init__", counting_init)
    with HessianOperator(model, loss_fn) as op:
        flat = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=6, rhos=RHOS,
                                 sigmas=[0.05], draws=2, operator=op)
        rows = expansion_check(model, loss_fn, settings=SETTINGS, rhos=RHOS, operator=op,
                               ascents=flat.ascents, lambda_max=flat["lambda_max"])
    assert len(built) == 1  # one gradient graph for Lanczos, the trace and every delta.H.delta
    assert flat["lambda_max"] == pytest.approx(plain_summary["lambda_max"], rel=1e-5)
    assert flat["trace"]["estimate"] == pytest.approx(plain_summary["trace"]["estimate"],
                                                      rel=1e-5)
    assert flat["worst_case"] == plain_summary["worst_case"]
    for r, p in zip(rows, plain_rows, strict=True):
        assert r["measured"] == p["measured"] and r["name"] == p["name"]
        for key in ("predicted", "linear", "quadratic"):
            assert r[key] == pytest.approx(p[key], rel=1e-5, abs=1e-9)
        expected = flat["lambda_max"] * r["delta_norm"] ** 2
        assert r["lambda_max_delta_sq"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="closed"):  # a freed graph is not silently reused
        sharpness_summary(model, loss_fn, top_k=1, rhos=[], sigmas=[], operator=op)


def test_summary_with_one_operator_matches_the_exact_hessian_and_separate_operators():
    model, loss_fn = tiny_problem()
    h = exact_hessian(model, loss_fn)
    exact = torch.linalg.eigvalsh(h).flip(0)
    s = sharpness_summary(model, loss_fn, top_k=3, tol=1e-8, max_iter=200, trace=True,
                          trace_matvecs=30, per_layer=True, density=True, density_iter=8,
                          rhos=[], sigmas=[])  # fmt: skip
    torch.testing.assert_close(torch.tensor(s["top_k"], dtype=torch.float64), exact[:3],
                               rtol=1e-6, atol=0)
    # the old path: a new operator (a new gradient graph) per measure
    eig = hessian_eigenvalues(model, loss_fn, k=3, tol=1e-8, max_iter=200)
    tr = hessian_trace(model, loss_fn, n_matvecs=30)
    assert s["top_k"] == pytest.approx(eig.tolist(), rel=1e-10)
    assert s["trace"]["estimate"] == pytest.approx(tr.estimate, rel=1e-10)
    with HessianOperator(model, loss_fn) as op, pytest.raises(ValueError, match="another"):
        sharpness_summary(model, tiny_problem()[1], top_k=1, operator=op)


def test_average_case_runs_no_vmap_trial_on_cpu(monkeypatch):
    model, loss_fn = convnet_problem()
    calls = []
    vmap = torch.func.vmap

    def spy(fn, *args, **kwargs):
        batched = vmap(fn, *args, **kwargs)

        def run(*a, **k):
            calls.append(1)
            return batched(*a, **k)

        return run

    monkeypatch.setattr(torch.func, "vmap", spy)
    auto = average_case_sharpness(model, loss_fn, [0.02, 0.05], draws=2)
    assert calls == []
    loop = average_case_sharpness(model, loss_fn, [0.02, 0.05], draws=2, vectorize=False)
    assert auto.losses == loop.losses and auto.std == loop.std
    average_case_sharpness(model, loss_fn, [0.02], draws=2, vectorize=True)
    assert calls  # the spy sees vmap when it runs: its silence above is meaningful


def test_quality_rise_joins_the_quantization_ladder_of_the_same_delta():
    from flatgen import records as keys
    from flatgen.analysis import expansion_regression
    from flatgen.study.expansion import attach_quality_rise

    model, loss_fn = convnet_problem()
    rows = expansion_check(model, loss_fn, settings=SETTINGS, rhos=[0.02])
    assert [r["ladder"] for r in rows] == [keys.QUANT_W_TENSOR] * 2 + [None, None]
    ladders = {keys.QUANT_W_TENSOR: {"levels": [8.0, 6.0, 4.0], "clean": 2.0,
                                     "values": [2.5, None, 7.0]},
               keys.NOISE_WEIGHTS: {"levels": [0.05], "clean": 2.0, "values": [9.0]}}
    joined = attach_quality_rise(rows, ladders)
    assert [r.get("quality_rise") for r in joined] == [0.5, 5.0, None, None]
    assert "quality_rise" not in rows[0]  # the rows given are not modified
    assert expansion_regression(joined)["quality"]["n"] == 2
