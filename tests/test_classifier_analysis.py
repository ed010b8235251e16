"""The classifier study's statistics: one point per method, a declared primary test, a Holm
family for the rest, and no groups the config does not declare (synthetic runs, no training)."""

from __future__ import annotations

import itertools
import json

import pytest
from scipy import stats

from flatgen.classify.analysis import analyze, spearman
from flatgen.classify.config import ClassifierStudyConfig
from flatgen.classify.report import method_means, write_outputs
from flatgen.stats import holm

ATTACKS = {"attacks": ["pgd"], "eps_linf": [0.1], "eps_l2": [1.0]}


def _row(method: str, seed: int, *, sharp: float, acc: float, masked: float | None = None):
    sharpness = {"lambda_max": sharp, "trace": 10 * sharp + seed, "worst_case": seed * 0.1}
    sharpness.update(average_case=0.5 + 0.01 * seed, loss=0.1)
    extra = {} if masked is None else {"at_temperature": {"pgd-linf@0.1": masked}}
    return {
        "method": method,
        "seed": seed,
        "robust": {"clean": 0.9 + 0.001 * seed, "pgd-linf@0.1": acc, "pgd-l2@1": acc / 2},
        "sharpness": sharpness,
        "extra": extra,
        "seconds": 1.0,
    }


def _cfg(methods: list[str], **correlation) -> ClassifierStudyConfig:
    return ClassifierStudyConfig.model_validate(
        {
            "seeds": [0, 1, 2],
            "methods": [{"method": "plain", "name": m} for m in methods],
            "attacks": ATTACKS,
            "correlation": correlation,
        }
    )


def test_primary_analysis_has_one_point_per_method():
    # across methods: sharper -> less robust; within each method the seeds go the other way,
    # so a test over the 9 runs would see a mixture, the one over 3 method means sees rho = -1
    rows = [
        _row(m, s, sharp=base + 0.1 * s, acc=top + 0.01 * s)
        for m, base, top in (("a", 1.0, 0.6), ("b", 2.0, 0.4), ("c", 3.0, 0.2))
        for s in range(3)
    ]
    cfg = _cfg(["a", "b", "c"])
    means = method_means(cfg, rows)
    assert means["b"]["lambda_max"][0] == pytest.approx(2.1)
    assert means["b"]["lambda_max"][1] == pytest.approx(0.1)  # the sd over seeds, beside it
    prim = analyze(cfg, means)["primary"]
    assert prim["n"] == 3 and prim["methods"] == ["a", "b", "c"]
    assert prim["rho"] == pytest.approx(-1.0)
    # exact permutation: 2 of the 3! pairings are as extreme, p = 1/3; nothing smaller exists
    assert prim["p"] == pytest.approx(1 / 3) and prim["min_attainable_p"] == pytest.approx(1 / 3)
    assert not prim["significant"] and prim["p_method"] == "exact permutation"
    per_run = stats.spearmanr(
        [r["sharpness"]["lambda_max"] for r in rows], [r["robust"]["pgd-linf@0.1"] for r in rows]
    )
    assert per_run.pvalue < 0.05  # what treating seeds as points would have claimed


def test_spearman_matches_scipy_and_the_exact_null():
    x, y = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]
    assert spearman(x, y) == {
        "rho": -1.0,
        "p": pytest.approx(2 / 24),
        "n": 4,
        "p_method": "exact permutation",
    }
    xs = [0.3, 1.2, 0.7, 2.2, 1.9, 0.1, 3.0, 2.5, 1.1, 0.9]  # n = 10: scipy's t approximation
    ys = [0.5, 0.4, 0.9, 0.1, 0.3, 0.8, 0.2, 0.0, 0.6, 0.7]
    ref = stats.spearmanr(xs, ys)
    got = spearman(xs, ys)
    assert got["rho"] == pytest.approx(ref.statistic) and got["p"] == pytest.approx(ref.pvalue)
    # the exact null by brute force for n = 5
    a, b = [0.1, 0.5, 0.2, 0.9, 0.7], [0.3, 0.1, 0.4, 0.2, 0.8]
    rho = stats.spearmanr(a, b).statistic
    perms = [stats.spearmanr(a, p).statistic for p in itertools.permutations(b)]
    exact = sum(abs(r) >= abs(rho) - 1e-12 for r in perms) / len(perms)
    assert spearman(a, b)["p"] == pytest.approx(exact)


def test_exploratory_pvalues_are_holm_adjusted_and_the_primary_is_not():
    names = ["a", "b", "c", "d", "e", "f"]
    # trace tracks the accuracy perfectly (planted); the primary lambda_max is noise
    lam = [0.3, 0.9, 0.1, 0.5, 0.7, 0.2]
    rows = [
        _row(m, s, sharp=lam[i], acc=0.1 * (6 - i)) for i, m in enumerate(names) for s in (0, 1)
    ]
    for i, r in enumerate(rows):
        r["sharpness"]["trace"] = float(i // 2)  # increasing in the method, acc decreasing
    cfg = _cfg(names)
    res = analyze(cfg, method_means(cfg, rows))
    corr = res["correlations"]["all"]
    prim = corr["lambda_max"]["pgd-linf@0.1"]
    assert prim["role"] == "primary" and prim["p_holm"] is None
    family = [
        c
        for s in ("lambda_max", "trace", "worst_case", "average_case")
        for c in corr[s].values()
        if c["role"] == "exploratory" and c["p"] is not None
    ]
    assert res["exploratory"]["family_size"] == len(family)
    assert [c["p_holm"] for c in family] == pytest.approx(holm([c["p"] for c in family]))
    planted = corr["trace"]["pgd-linf@0.1"]
    assert planted["rho"] == pytest.approx(-1.0) and planted["p"] == pytest.approx(2 / 720)
    assert planted["p_holm"] > planted["p"]  # the adjustment is applied
    assert {"group": "all", "sharpness": "trace", "accuracy": "pgd-linf@0.1"}.items() <= (
        res["exploratory"]["significant"][0].items()
    )


def test_only_declared_subsets_exist(tmp_path):
    rows = [
        _row("a", s, sharp=1.0 + s, acc=0.5, masked=0.05)
        for s in range(3)  # gradient masked
    ] + [_row(m, s, sharp=2.0 + s, acc=0.3) for m in ("b", "c") for s in range(3)]
    summary = write_outputs(_cfg(["a", "b", "c"]), rows, failed={}, out_dir=tmp_path)
    assert list(summary["correlations"]) == ["all"]  # masking detected, yet no extra group
    assert "a" in summary["masked_methods"]
    declared = _cfg(["a", "b", "c"], subsets={"pair": ["b", "c"]})
    summary = write_outputs(declared, rows, failed={}, out_dir=tmp_path)
    assert list(summary["correlations"]) == ["all", "pair"]
    assert summary["correlations"]["pair"]["methods"] == ["b", "c"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["primary"]["n"] == 3 and "Primary test" in saved["verdict"]
    assert (tmp_path / "scatter.png").read_bytes()[:4] == b"\x89PNG"
