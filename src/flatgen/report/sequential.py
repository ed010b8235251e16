"""A group-sequential design for a study that adds seeds until each claim is decided.

Looking at the data after every batch of seeds and testing at α each time inflates the error
rate (4 looks at 0.05: about 0.12 under the null). The design here spends α over the looks with
the Lan-DeMets form of the O'Brien-Fleming boundary (Lan & DeMets 1983, Biometrika 70:659), so
the chance of ever rejecting a true null stays α whatever look the study stops at.

- Information fraction of look k: t_k = n_k / n_max (seeds so far over the most seeds allowed).
- Spending, per tail (DeMets & Lan 1994, Stat Med 13:1341; R ldbounds, gsDesign's sfLDOF):
  α₁(t) = 2 − 2Φ(z_{1−α₁/2} / √t) with α₁ = α/2 in each tail, so a two-sided study spends
  2·α₁(t), which is α at t = 1. (The same formula with the two-sided α in place of α₁, option
  `per_tail=False`, spends more early; it is not the one the published tables use.)
- Boundaries: the canonical joint law of the look statistics is Z_k = S(t_k)/√t_k, S a Brownian
  motion (corr(Z_i, Z_j) = √(t_i/t_j)). c_k solves P_H0(|Z_j| < c_j for j < k, |Z_k| ≥ c_k) =
  spent(t_k) − spent(t_{k−1}), by the recursive numerical integration of Armitage, McPherson &
  Rowe (1969, JRSS A 132:235), as in Jennison & Turnbull (2000), ch. 19: the sub-density of the
  continuing paths is carried from look to look by convolving with the normal increment.
- With few seeds the claims are tested by t (paired or Welch), not z. The usual practice, kept
  here: the t test's own two-sided p at look k is compared with the look's nominal α,
  2(1 − Φ(c_k)). A family of claims may instead be Holm-adjusted at each look: a look decides
  the claims whose Holm-adjusted p at that look (over the whole family) is below its nominal α.
  The t statistics at successive looks are only approximately jointly normal, so the rate is
  α up to that approximation: over 20000 simulated null studies (paired t after 5, 10, 15, 20
  seeds) it is 0.052, against 0.13 for testing at 0.05 at every look (tests/test_sequential.py,
  which also checks the Holm family's familywise rate).
- `repeated_interval`: the interval to read "excluded at the source's size" at a look.

`seeds_for_power` gives the seeds a two-sided t test needs for a given power (noncentral t).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from flatgen.stats import holm

# grid points per sd of the narrower Brownian increment next to a look (Simpson's rule)
_GRID_PER_SD = 40
_MIN_POINTS, _MAX_POINTS = 1001, 4001  # the carried kernel is points x points


def obf_spending(t: float, *, alpha: float = 0.05, per_tail: bool = True) -> float:
    """Two-sided α spent by information fraction t (0 < t ≤ 1) under the O'Brien-Fleming-type
    spending function; `alpha` at t = 1."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if t <= 0:
        return 0.0
    t = min(float(t), 1.0)
    side = alpha / 2 if per_tail else alpha  # the α the formula is written with
    spent = 2.0 * sps.norm.sf(sps.norm.isf(side / 2) / math.sqrt(t))
    return 2.0 * spent if per_tail else spent


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    t = np.asarray(fractions, float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("a design needs at least one look")
    if (t <= 0).any() or (t > 1 + 1e-12).any() or (np.diff(t) <= 0).any():
        raise ValueError(f"information fractions must increase within (0, 1], got {list(t)}")
    return np.minimum(t, 1.0)


def _simpson(lo: float, hi: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and composite-Simpson weights on [lo, hi] (an odd number of points)."""
    points += 1 - points % 2
    x = np.linspace(lo, hi, points)
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3.0


def _solve_boundary(
    nodes: np.ndarray, mass: np.ndarray, *, sd: float, t: float, target: float
) -> float:
    """c with P(continuing at the last look, |S(t)| >= c√t) = target; S moves N(0, sd²) on."""
    if target <= 0:
        return math.inf

    def crossing(c: float) -> float:
        b = c * math.sqrt(t)
        return float(mass @ (sps.norm.cdf((-b - nodes) / sd) + sps.norm.sf((b - nodes) / sd)))

    return float(optimize.brentq(lambda c: crossing(c) - target, 0.0, 50.0, xtol=1e-10))


def obf_boundaries(
    fractions: Sequence[float], *, alpha: float = 0.05, per_tail: bool = True
) -> list[float]:
    """Nominal z boundaries c_k (|Z_k| ≥ c_k stops) at looks with these information fractions;
    the cumulative chance of crossing by look k under H0 is `obf_spending(t_k)` (exact up to the
    quadrature: a 4x finer grid moves c by under 1e-10). A look that spends nothing has c = inf."""
    t = _check_fractions(fractions)
    spent = [obf_spending(tk, alpha=alpha, per_tail=per_tail) for tk in t]
    steps = np.sqrt(np.diff(np.concatenate([[0.0], t])))  # sd of each Brownian increment
    bounds: list[float] = []
    nodes = weights = dens = None  # sub-density of S(t_{k-1}) on the continuation region
    for k, tk in enumerate(t):
        target = spent[k] - (spent[k - 1] if k else 0.0)
        if k == 0:
            c = float(sps.norm.isf(target / 2)) if target > 0 else math.inf
        else:
            mass = weights * dens  # probability of each node of the continuing paths
            c = _solve_boundary(nodes, mass, sd=steps[k], t=tk, target=target)
        bounds.append(c)
        if k == len(t) - 1:
            break
        # carry the sub-density of the paths still running to look k (Brownian scale S = Z√t)
        b = min(c, 12.0) * math.sqrt(tk)  # beyond 12 sd the density is below 1e-30
        # the grid resolves the narrower of the kernels into and out of look k
        points = int(math.ceil(2 * b / min(steps[k], steps[k + 1]) * _GRID_PER_SD))
        points = min(max(_MIN_POINTS, points), _MAX_POINTS)
        new_nodes, new_weights = _simpson(-b, b, points)
        if k == 0:
            dens = sps.norm.pdf(new_nodes, scale=math.sqrt(tk))
        else:
            sd = steps[k]
            kernel = sps.norm.pdf((new_nodes[:, None] - nodes[None, :]) / sd) / sd
            dens = kernel @ (weights * dens)
        nodes, weights = new_nodes, new_weights
    return bounds


def nominal_alphas(
    fractions: Sequence[float], *, alpha: float = 0.05, per_tail: bool = True
) -> list[float]:
    """The two-sided nominal p threshold of each look, 2(1 − Φ(c_k))."""
    bounds = obf_boundaries(fractions, alpha=alpha, per_tail=per_tail)
    return [float(2.0 * sps.norm.sf(c)) for c in bounds]


@dataclass(frozen=True)
class SequentialDesign:
    """Looks after `looks[k]` seeds, up to `looks[-1]` = the most seeds; nominal α per look."""

    looks: tuple[int, ...]
    alpha: float
    boundaries: tuple[float, ...]
    nominal: tuple[float, ...]

    @classmethod
    def planned(
        cls, *, batch: int = 5, max_seeds: int = 20, alpha: float = 0.05, first: int | None = None
    ) -> SequentialDesign:
        """Looks at `first` (default `batch`) seeds, then every `batch`, up to `max_seeds`."""
        first = batch if first is None else first
        if batch < 1 or first < 2 or max_seeds < first:
            raise ValueError(
                f"a sequential design needs batch >= 1 and 2 <= first <= max_seeds "
                f"(got batch={batch}, first={first}, max_seeds={max_seeds})"
            )
        looks = list(range(first, max_seeds + 1, batch))
        if looks[-1] != max_seeds:
            looks.append(max_seeds)
        return cls.from_looks(looks, alpha=alpha)

    @classmethod
    def from_looks(
        cls, looks: Sequence[int], *, alpha: float = 0.05, max_seeds: int | None = None
    ) -> SequentialDesign:
        """The looks actually taken, as fractions of `max_seeds` (default: the last look). A
        study cut short by its budget keeps the planned maximum: the α it did not reach stays
        unspent (the spending function allows unplanned looks, Lan & DeMets 1983)."""
        max_seeds = looks[-1] if max_seeds is None else max_seeds
        fractions = [n / max_seeds for n in looks]
        bounds = obf_boundaries(fractions, alpha=alpha)
        nominal = tuple(float(2.0 * sps.norm.sf(c)) for c in bounds)
        return cls(tuple(int(n) for n in looks), alpha, tuple(bounds), nominal)

    def look_of(self, n_seeds: int) -> int:
        """The 0-based look taken after `n_seeds` seeds."""
        if n_seeds not in self.looks:
            raise ValueError(f"no look after {n_seeds} seeds; the looks are at {self.looks}")
        return self.looks.index(n_seeds)


@dataclass(frozen=True)
class Look:
    """One claim at one look: its p (raw and, in a Holm family, adjusted), the look's nominal α,
    and whether it crossed. `look` is 1-based, as a report says it ("decided at look 2 of 4")."""

    claim: str
    look: int
    n_looks: int
    n_seeds: int
    p: float
    p_adjusted: float
    nominal_alpha: float
    decided: bool


def decide(
    pvalues: Mapping[str, float],
    *,
    design: SequentialDesign,
    n_seeds: int,
    holm_family: bool = True,
) -> dict[str, Look]:
    """The decision at the look after `n_seeds` seeds for each claim's two-sided t-test p.

    With `holm_family` the p-values are Holm-adjusted over the whole family at this look (claims
    decided earlier included, which only makes it stricter); otherwise each claim's own p is
    compared with the look's nominal α. NaN (no test possible) never decides."""
    k = design.look_of(n_seeds)
    names = list(pvalues)
    raw = [float(pvalues[c]) for c in names]
    testable = [i for i, p in enumerate(raw) if not math.isnan(p)]
    adjusted = [math.nan] * len(raw)
    if holm_family:
        for i, q in zip(testable, holm([raw[i] for i in testable]), strict=True):
            adjusted[i] = q
    else:
        for i in testable:
            adjusted[i] = raw[i]
    nominal = design.nominal[k]
    return {
        c: Look(c, k + 1, len(design.looks), n_seeds, raw[i], adjusted[i], nominal,
                bool(adjusted[i] < nominal))
        for i, c in enumerate(names)
    }


def repeated_interval(
    estimate: float, se: float, df: float, *, design: SequentialDesign, n_seeds: int
) -> tuple[float, float]:
    """The repeated confidence interval at the look after `n_seeds` seeds (Jennison & Turnbull
    1989, JRSS B 51:301): estimate ± t_{df, 1 − α_k/2} se with α_k the look's nominal α. Over
    all looks together they cover the true effect with probability 1 − α, so "the interval
    excludes the source's effect" may be read at any look, as the p-value is."""
    nominal = design.nominal[design.look_of(n_seeds)]
    half = float(sps.t.isf(nominal / 2, df)) * se
    return estimate - half, estimate + half


def first_decisions(history: Sequence[Mapping[str, Look]]) -> dict[str, Look | None]:
    """Each claim's first deciding look over a study's looks, in order (None: never decided).
    A claim decided once stays decided: the study stopped testing it there."""
    out: dict[str, Look | None] = {}
    for looks in history:
        for claim, look in looks.items():
            if out.get(claim) is None:
                out[claim] = look if look.decided else None
    return out


def _t_power(n: int, d: float, alpha: float, paired: bool) -> float:
    df = n - 1 if paired else 2 * n - 2
    nc = d * math.sqrt(n if paired else n / 2)
    crit = sps.t.isf(alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def t_power(n: int, *, sd: float, effect: float, alpha: float = 0.05, paired: bool = True) -> float:
    """Power of the two-sided t test with n seeds (per group when not paired): the noncentral t
    with df n − 1 and ncp δ√n (paired; sd of the differences), or df 2n − 2 and ncp δ√(n/2)
    (two equal groups; sd within a group), δ = effect / sd."""
    if n < 2:
        return math.nan
    return _t_power(n, abs(effect) / sd, alpha, paired)


def seeds_for_power(
    sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
    max_seeds: int = 100_000,
) -> int:
    """The fewest seeds (per group when not paired) for a two-sided t test at `alpha` to reach
    `power` against `effect`, iterating n over the noncentral-t power."""
    if sd <= 0 or effect == 0 or not 0 < power < 1:
        raise ValueError("seeds_for_power needs sd > 0, a nonzero effect and 0 < power < 1")
    d = abs(effect) / sd
    for n in range(2, max_seeds + 1):
        if _t_power(n, d, alpha, paired) >= power:
            return n
    raise ValueError(f"more than {max_seeds} seeds needed for power {power} at effect {effect}")


__all__ = [
    "Look",
    "SequentialDesign",
    "decide",
    "first_decisions",
    "nominal_alphas",
    "obf_boundaries",
    "obf_spending",
    "repeated_interval",
    "seeds_for_power",
    "t_power",
]
