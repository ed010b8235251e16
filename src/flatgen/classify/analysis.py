"""The classifier study's statistics: Spearman over methods, one point per method.

Seeds of one method are not independent draws of the sharpness-robustness relation (they share
the method), so every correlation is over the method means; the spread over seeds is reported
beside each mean, not fed into the test. One pair (sharpness measure, robust accuracy) is
declared primary in the config before running and decides the verdict. Every other pair, over
all methods and within each declared subset, is exploratory: those p-values form one Holm
family. There are no other groups.

p-values: with n <= EXACT_MAX_N methods, the exact permutation distribution of Spearman's rho
(scipy.stats.permutation_test over all n! pairings); above, scipy.stats.spearmanr's t
approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from flatgen.classify.config import ClassifierStudyConfig
from flatgen.classify.evaluate import SHARPNESS_KEYS, robust_key
from flatgen.stats import holm

EXACT_MAX_N = 8  # 8! = 40320 pairings


def robust_keys(cfg: ClassifierStudyConfig) -> list[str]:
    """Robust-accuracy columns in table order: per norm, per attack, per eps."""
    return [
        robust_key(a, n, e)
        for n, eps in (("linf", cfg.attacks.eps_linf), ("l2", cfg.attacks.eps_l2))
        for a in cfg.attacks.attacks
        for e in eps
    ]


def target_key(cfg: ClassifierStudyConfig) -> str:
    """The primary robust-accuracy column."""
    p = cfg.correlation.primary
    return robust_key(p.attack, p.norm, cfg.target_eps)


def _rank_corr(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along axis (vectorized, for the permutation test)."""
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    num = (rx * ry).sum(axis=axis)
    return num / np.sqrt((rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    """Spearman's rho and its two-sided p; None where undefined (n < 3, a constant)."""
    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"rho": None, "p": None, "n": n, "p_method": None}
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    rho = float(stats.spearmanr(x, y).statistic)
    if n <= EXACT_MAX_N:
        # one sample: "pairings" then permutes y against the fixed x (n! pairings, not n!^2)
        res = stats.permutation_test(
            (y,),
            lambda yy, axis=-1: _rank_corr(x, yy, axis=axis),
            permutation_type="pairings",
            vectorized=True,
            n_resamples=np.inf,
        )
        return {"rho": rho, "p": float(res.pvalue), "n": n, "p_method": "exact permutation"}
    return {
        "rho": rho,
        "p": float(stats.spearmanr(x, y).pvalue),
        "n": n,
        "p_method": "t approximation",
    }


def min_attainable_p(n: int) -> float | None:
    """The smallest two-sided exact p with n points and no ties (2 of n! pairings), if exact."""
    return 2.0 / math.factorial(n) if 3 <= n <= EXACT_MAX_N else None


def groups(cfg: ClassifierStudyConfig, means: dict[str, dict]) -> dict[str, list[str]]:
    """ "all" (every method with results) and each subset the config declares, nothing else."""
    out = {"all": list(means)}
    for name, methods in cfg.correlation.subsets.items():
        out[name] = [m for m in means if m in methods]
    return out


def _correlate(means: dict[str, dict], methods: list[str], measure: str, col: str) -> dict:
    pts = [
        (means[m][measure][0], means[m][col][0])
        for m in methods
        if measure in means[m] and col in means[m]
    ]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    return spearman([p[0] for p in pts], [p[1] for p in pts])


def analyze(cfg: ClassifierStudyConfig, means: dict[str, dict]) -> dict[str, Any]:
    """The primary test, the Holm-adjusted exploratory family, and every group's correlations.

    means: method -> column -> [mean, sd, n] over seeds (the study's method_means). Returns
    {"primary": {...}, "correlations": {group: {"methods", "n", measure: {column: {...}}}},
    "exploratory": {"family_size", "significant": [...]}}.
    """
    primary_measure, primary_col = cfg.correlation.primary.sharpness, target_key(cfg)
    cols = ["clean", *robust_keys(cfg)]
    corr: dict[str, dict] = {}
    family: list[dict] = []
    for label, methods in groups(cfg, means).items():
        corr[label] = {"methods": methods, "n": len(methods)}
        for s in SHARPNESS_KEYS:
            corr[label][s] = {}
            for k in cols:
                c = _correlate(means, methods, s, k)
                is_primary = label == "all" and s == primary_measure and k == primary_col
                c.update(role="primary" if is_primary else "exploratory", p_holm=None)
                corr[label][s][k] = c
                if not is_primary and c["p"] is not None:
                    family.append({"group": label, "sharpness": s, "accuracy": k, "c": c})
    for item, adj in zip(family, holm([f["c"]["p"] for f in family]), strict=True):
        item["c"]["p_holm"] = adj
    alpha = cfg.correlation.alpha
    prim = corr["all"][primary_measure][primary_col]
    primary = {
        "sharpness": primary_measure,
        "accuracy": primary_col,
        **{k: prim[k] for k in ("rho", "p", "n", "p_method")},
        "methods": corr["all"]["methods"],
        "alpha": alpha,
        "significant": prim["p"] is not None and prim["p"] < alpha,
        "min_attainable_p": min_attainable_p(prim["n"]),
    }
    significant = [
        {k: f[k] for k in ("group", "sharpness", "accuracy")}
        | {"rho": f["c"]["rho"]}
        | {"p_holm": f["c"]["p_holm"]}
        for f in family
        if f["c"]["p_holm"] < alpha
    ]
    return {
        "primary": primary,
        "correlations": corr,
        "exploratory": {"family_size": len(family), "significant": significant},
    }
