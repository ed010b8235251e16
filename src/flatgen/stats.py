"""Statistics on per-seed values: the tests behind the claims' verdicts, and the one mean ± std.

Every comparison is of two samples, a (the method) and b (its baseline), one value per seed:
- `welch`: Welch's t (unequal variances), the primary test;
- `paired`: a paired t, where both sides share their seeds (same init, data order and noise);
- `rank_test`: an exact permutation test of the Mann-Whitney U on (mid)ranks, for samples with
  censored values (beyond a sweep: known only as a lower bound, so only their order is used);
- `holm`: Holm's step-down adjustment across a family of p-values;
- `direction`: with one seed there is no test, only which way the difference points.

The effect is a difference of means with the t interval of the test; with `log=True` it is the
ratio of geometric means, exp of the interval on log values (for robust levels, which scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as sps

from flatgen.tabulate import mean_std  # the one definition, shared with dro/ and classify/

# up to this many relabellings the rank test enumerates them all (10 vs 10 seeds: 184756)
EXACT_LIMIT = 200_000


@dataclass(frozen=True)
class StatResult:
    """One two-sample comparison. effect: mean(a) - mean(b), or with log the ratio of geometric
    means a/b; ci: its 95% interval (None where no interval is honest, e.g. censored values)."""

    test: str
    statistic: float
    df: float | None
    p: float
    effect: float
    ci: tuple[float, float] | None
    n_a: int
    n_b: int
    log: bool = False
    # the t tests' mean difference and its standard error on the test's scale (log values with
    # log=True): what a one-sided test against another null (the source's effect) needs
    center: float | None = None
    se: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def one_sided_p(self, null: float, *, alternative: str) -> float | None:
        """p of the one-sided t test of H0: effect beyond `null` against H1: effect on the
        `alternative` side of it ("greater" or "less"), on the effect's scale (a ratio when
        log=True). None where the test has no t interval (rank tests)."""
        if self.center is None or self.se is None or self.df is None:
            return None
        if alternative not in ("greater", "less"):
            raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
        if self.log:
            if null <= 0:
                raise ValueError("a ratio's null must be positive")
            null = math.log(null)
        if self.se == 0.0:
            above = self.center > null
            return 0.0 if above == (alternative == "greater") and self.center != null else 1.0
        t = (self.center - null) / self.se
        return float(sps.t.sf(t, self.df) if alternative == "greater" else sps.t.cdf(t, self.df))


def _arrays(a: Sequence[float], b: Sequence[float], log: bool) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if log:
        if (xa <= 0).any() or (xb <= 0).any():
            raise ValueError("log effects need positive values (robust levels, ratios)")
        xa, xb = np.log(xa), np.log(xb)
    return xa, xb


def _effect(diff: float, half: float, log: bool) -> tuple[float, tuple[float, float]]:
    lo, hi = diff - half, diff + half
    if log:
        return math.exp(diff), (math.exp(lo), math.exp(hi))
    return diff, (lo, hi)


def welch(
    a: Sequence[float], b: Sequence[float], *, log: bool = False, confidence: float = 0.95
) -> StatResult:
    """Welch's t test (two-sided) with the Welch-Satterthwaite degrees of freedom."""
    xa, xb = _arrays(a, b, log)
    na, nb = len(xa), len(xb)
    if na < 2 or nb < 2:
        raise ValueError(f"Welch's t needs two values per side, got {na} and {nb}")
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    diff = float(xa.mean() - xb.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:  # no spread on either side: any difference is exact
        p = 1.0 if diff == 0 else 0.0
        return StatResult("Welch t", math.copysign(math.inf, diff) if diff else 0.0, None, p,
                          *_effect(diff, 0.0, log), na, nb, log, diff, 0.0)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return StatResult("Welch t", t, df, p, *_effect(diff, half, log), na, nb, log, diff, se)


def paired(
    a: Sequence[float], b: Sequence[float], *, log: bool = False, confidence: float = 0.95
) -> StatResult:
    """Paired t test (two-sided) on a[i] - b[i]; a and b list the same seeds in the same order."""
    xa, xb = _arrays(a, b, log)
    if len(xa) != len(xb) or len(xa) < 2:
        raise ValueError(f"a paired t needs two or more pairs, got {len(xa)} and {len(xb)}")
    d = xa - xb
    n = len(d)
    diff, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return StatResult("paired t", math.copysign(math.inf, diff) if diff else 0.0, n - 1, p,
                          *_effect(diff, 0.0, log), n, n, log, diff, 0.0)
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), n - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return StatResult("paired t", t, n - 1, p, *_effect(diff, half, log), n, n, log, diff, se)


def _ranks(values: Sequence[float], censored: Sequence[bool]) -> np.ndarray:
    """Midranks in which a censored value ranks above an exact one equal to its bound (it is
    really larger) and ties with other censored values at the same bound."""
    keys = [(float(v), bool(c)) for v, c in zip(values, censored, strict=True)]
    order = sorted(set(keys))
    ranks = np.empty(len(keys))
    start = 1
    for key in order:
        idx = [i for i, k in enumerate(keys) if k == key]
        ranks[idx] = start + (len(idx) - 1) / 2
        start += len(idx)
    return ranks


def rank_test(
    a: Sequence[float], b: Sequence[float], *, censored_a: Sequence[bool] | None = None,
    censored_b: Sequence[bool] | None = None, log: bool = False,
) -> StatResult:
    """Mann-Whitney U on midranks, p two-sided from the exact permutation distribution (ties
    kept as they are) up to EXACT_LIMIT relabellings, else the tie-corrected normal approximation.

    A censored value is a lower bound at the sweep's end. The effect (difference or ratio of
    means, with the bounds taken as values) then has no honest interval: ci is None.
    """
    na, nb = len(a), len(b)
    if na < 1 or nb < 1 or na + nb < 3:
        raise ValueError(f"a rank test needs values on both sides, got {na} and {nb}")
    ca = list(censored_a) if censored_a is not None else [False] * na
    cb = list(censored_b) if censored_b is not None else [False] * nb
    ranks = _ranks([*a, *b], [*ca, *cb])
    n = na + nb
    u = float(ranks[:na].sum() - na * (na + 1) / 2)
    if math.comb(n, na) <= EXACT_LIMIT:
        sums = np.array([ranks[list(idx)].sum() for idx in combinations(range(n), na)])
        us = sums - na * (na + 1) / 2
        # two-sided as scipy's: twice the smaller tail (ties can make U's law asymmetric)
        p = 2 * min(float(np.mean(us <= u + 1e-9)), float(np.mean(us >= u - 1e-9)))
        test = "Mann-Whitney U (exact permutation)"
    else:
        p = float(sps.mannwhitneyu(ranks[:na], ranks[na:], method="asymptotic").pvalue)
        test = "Mann-Whitney U (normal approximation)"
    xa, xb = _arrays(a, b, log)
    diff = float(xa.mean() - xb.mean())
    effect = math.exp(diff) if log else diff
    # without censoring the Welch interval describes the effect; with it, no interval is honest
    exact = not any(ca) and not any(cb) and na > 1 and nb > 1
    ci = welch(a, b, log=log).ci if exact else None
    return StatResult(test, u, None, min(p, 1.0), effect, ci, na, nb, log)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (monotone, capped at 1)."""
    p = list(pvalues)
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def shaffer(pvalues: Sequence[float], groups: Sequence[object]) -> list[float]:
    """Holm's step-down with Shaffer's logical constraint (Shaffer 1986, method 1): hypotheses
    in one group are exclusive (at most one of them can be true), so at each step the divisor is
    the most true nulls still possible: the number of groups with a hypothesis not yet rejected.
    A claim's "no effect" (0) and "the source's effect" nulls are such a group: the effect
    cannot both be zero and reach the source's size. With one hypothesis per group this is
    Holm. Adjusted p-values, in the input's order (monotone, capped at 1)."""
    p = list(pvalues)
    if len(p) != len(groups):
        raise ValueError(f"{len(p)} p-values but {len(groups)} groups")
    order = sorted(range(len(p)), key=lambda i: p[i])
    open_in = {g: sum(1 for h in groups if h == g) for g in groups}  # unrejected per group
    adjusted = [0.0] * len(p)
    running = 0.0
    for i in order:
        possible = sum(1 for n in open_in.values() if n > 0)  # most true nulls still possible
        running = max(running, min(1.0, possible * p[i]))
        adjusted[i] = running
        open_in[groups[i]] -= 1
    return adjusted


def direction(a: float, b: float, *, claimed: str) -> str:
    """One seed: 'claimed way' when a is lower (claimed='lower') or higher than b, else 'other
    way'; an exact tie is 'tie'."""
    if claimed not in ("lower", "higher"):
        raise ValueError(f"claimed must be 'lower' or 'higher', got {claimed!r}")
    if a == b:
        return "tie"
    return "claimed way" if (a < b) == (claimed == "lower") else "other way"


__all__ = ["EXACT_LIMIT", "StatResult", "direction", "holm", "mean_std", "paired", "rank_test",
           "shaffer", "welch"]
