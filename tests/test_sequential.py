"""The group-sequential design: boundaries against published values and two independent
calculations, the error rate over simulated null studies, power against a Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from flatgen.report.sequential import (
    SequentialDesign,
    decide,
    first_decisions,
    nominal_alphas,
    obf_boundaries,
    obf_spending,
    repeated_interval,
    seeds_for_power,
    t_power,
)

FIVE = [0.2, 0.4, 0.6, 0.8, 1.0]


def test_boundaries_match_published_lan_demets_obf():
    # DeMets & Lan (1994), Table 1; R ldbounds / gsDesign sfLDOF, K=5, two-sided alpha 0.05
    published = [4.877, 3.357, 2.680, 2.290, 2.031]
    assert obf_boundaries(FIVE, alpha=0.05) == pytest.approx(published, abs=6e-4)
    # K=4 equally spaced (R ldbounds / gsDesign, the same convention)
    assert obf_boundaries([0.25, 0.5, 0.75, 1.0]) == pytest.approx(
        [4.333, 2.963, 2.359, 2.014], abs=6e-4
    )


def test_one_look_is_the_fixed_test_and_the_first_look_is_closed_form():
    assert obf_boundaries([1.0]) == pytest.approx([sps.norm.isf(0.025)], abs=1e-9)
    assert obf_boundaries([1.0], per_tail=False) == pytest.approx([sps.norm.isf(0.025)])
    c1 = obf_boundaries([0.3, 1.0])[0]
    assert c1 == pytest.approx(sps.norm.isf(obf_spending(0.3) / 2), abs=1e-12)
    assert obf_spending(1.0, alpha=0.05) == pytest.approx(0.05)
    assert obf_spending(1.0, alpha=0.05, per_tail=False) == pytest.approx(0.05)


def test_two_looks_match_the_bivariate_normal_cdf():
    # independent of the quadrature: P(|Z1| < c1, |Z2| < c2) with corr sqrt(t1/t2) = 1 - alpha(t2)
    for t1 in (0.3, 0.5, 0.8):
        for per_tail in (True, False):
            c1, c2 = obf_boundaries([t1, 1.0], per_tail=per_tail)
            cov = [[1.0, math.sqrt(t1)], [math.sqrt(t1), 1.0]]
            mvn = sps.multivariate_normal(mean=[0, 0], cov=cov, abseps=1e-8, releps=1e-8)
            inside = mvn.cdf([c1, c2], lower_limit=[-c1, -c2])
            assert 1 - inside == pytest.approx(obf_spending(1.0, per_tail=per_tail), abs=2e-5)


@pytest.mark.parametrize("per_tail", [True, False])
def test_boundaries_spend_alpha_by_brownian_motion_monte_carlo(per_tail):
    # canonical joint law: Z_k = S(t_k)/sqrt(t_k), S a Brownian motion; count first crossings
    rng = np.random.default_rng(2024)
    t = np.asarray(FIVE)
    reps = 400_000
    steps = rng.standard_normal((reps, t.size)) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    c = np.asarray(obf_boundaries(FIVE, per_tail=per_tail))
    crossed = np.maximum.accumulate(np.abs(z) >= c, axis=1).mean(axis=0)
    for k, tk in enumerate(t):
        spent = obf_spending(tk, per_tail=per_tail)
        se = math.sqrt(max(spent, 1.0 / reps) * (1 - spent) / reps)
        assert abs(crossed[k] - spent) <= 4 * se + 1e-6, (k, crossed[k], spent)


def test_nominal_alphas_and_unequal_looks():
    nominal = nominal_alphas(FIVE)
    assert nominal == pytest.approx([2 * sps.norm.sf(c) for c in obf_boundaries(FIVE)])
    assert all(a < b for a, b in zip(nominal, nominal[1:], strict=False))
    assert nominal[-1] < 0.05  # the last look pays for the earlier ones
    # a study stopped early by budget: looks at 5, 10, 12 of 20 (fractions need not be even)
    assert obf_boundaries([0.25, 0.5, 0.6])[:2] == pytest.approx(obf_boundaries([0.25, 0.5, 1])[:2])
    with pytest.raises(ValueError):
        obf_boundaries([0.5, 0.4])
    with pytest.raises(ValueError):
        obf_boundaries([0.5, 1.2])


def _paired_p(diffs: np.ndarray, n: int) -> np.ndarray:
    """Two-sided one-sample (paired) t p-values over the first n seeds of every study."""
    x = diffs[..., :n]
    t = x.mean(-1) / (x.std(-1, ddof=1) / math.sqrt(n))
    return 2 * sps.t.sf(np.abs(t), n - 1)


def _rejections(diffs: np.ndarray, thresholds) -> np.ndarray:
    design = SequentialDesign.planned(batch=5, max_seeds=20)
    rejected = np.zeros(diffs.shape[:-1], bool)
    for n, a in zip(design.looks, thresholds, strict=True):
        rejected |= _paired_p(diffs, n) < a
    return rejected


def test_null_studies_keep_alpha_and_naive_looks_inflate_it():
    design = SequentialDesign.planned(batch=5, max_seeds=20, alpha=0.05)
    assert design.looks == (5, 10, 15, 20)
    rng = np.random.default_rng(7)
    # 200 null studies: per-seed paired differences ~ N(0, 1), a paired t after every 5 seeds
    diffs = rng.standard_normal((200, 20))
    count = int(_rejections(diffs, design.nominal).sum())
    assert count <= sps.binom.isf(0.005, 200, 0.05), count
    # reliable contrast on more null studies (same draw for both rules): the design's rate is
    # alpha within binomial slack, testing at 0.05 at every look is well above it
    many = rng.standard_normal((20_000, 20))
    seq = int(_rejections(many, design.nominal).sum())
    naive = int(_rejections(many, [0.05] * 4).sum())
    assert sps.binom.isf(0.0005, 20_000, 0.05) >= seq >= sps.binom.ppf(0.0005, 20_000, 0.05), seq
    assert sps.binomtest(naive, 20_000, 0.05, alternative="greater").pvalue < 1e-12
    assert naive / 20_000 > 0.09  # about 0.13 for 4 looks at 0.05 (Armitage et al. 1969)


def test_holm_family_keeps_familywise_rate_and_finds_a_planted_effect():
    design = SequentialDesign.planned(batch=5, max_seeds=20)
    rng = np.random.default_rng(11)
    studies, claims = 4000, 3
    diffs = rng.standard_normal((studies, claims, 20))
    diffs[:, 0] += 1.2  # claim "a" carries a real effect (1.2 sd), "b" and "c" none
    decided = {c: np.zeros(studies, bool) for c in "abc"}
    first_look = np.full(studies, 99)
    for n in design.looks:
        p = _paired_p(diffs, n)
        for s in range(studies):
            looks = decide(dict(zip("abc", p[s], strict=True)), design=design, n_seeds=n)
            for c, look in looks.items():
                if look.decided and c == "a" and not decided[c][s]:
                    first_look[s] = look.look
                decided[c][s] |= look.decided
    false = decided["b"] | decided["c"]
    assert false.sum() <= sps.binom.isf(0.001, studies, 0.05), false.mean()
    assert decided["a"].mean() > 0.95  # the planted effect is found ...
    assert np.median(first_look[decided["a"]]) <= 3  # ... mostly before all 20 seeds ran


def test_repeated_intervals_cover_over_all_looks_and_naive_ones_do_not():
    design = SequentialDesign.planned(batch=5, max_seeds=20)
    rng = np.random.default_rng(5)
    true = 0.3
    diffs = true + rng.standard_normal((20_000, 20))
    missed_rci = np.zeros(len(diffs), bool)
    missed_naive = np.zeros(len(diffs), bool)
    for n in design.looks:
        x = diffs[:, :n]
        mean, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
        lo, hi = repeated_interval(mean, se, n - 1, design=design, n_seeds=n)
        missed_rci |= (lo > true) | (hi < true)
        half = sps.t.isf(0.025, n - 1) * se
        missed_naive |= (mean - half > true) | (mean + half < true)
    assert missed_rci.sum() <= sps.binom.isf(0.0005, len(diffs), 0.05), missed_rci.mean()
    assert sps.binomtest(int(missed_naive.sum()), len(diffs), 0.05).pvalue < 1e-12
    # a study cut short at 12 of 20 seeds keeps the first two looks' boundaries
    short = SequentialDesign.from_looks([5, 10, 12], max_seeds=20)
    assert short.boundaries[:2] == pytest.approx(design.boundaries[:2])
    assert short.nominal[2] < design.nominal[2]  # less information, a stricter last look


def test_decide_and_first_decisions():
    design = SequentialDesign.planned(batch=5, max_seeds=20)
    k1 = decide({"x": 1e-6, "y": 0.5, "z": math.nan}, design=design, n_seeds=5)
    assert k1["x"].decided and not k1["y"].decided and not k1["z"].decided
    assert k1["x"].p_adjusted == pytest.approx(2e-6)  # Holm over the two testable claims
    assert (k1["x"].look, k1["x"].n_looks, k1["x"].nominal_alpha) == (1, 4, design.nominal[0])
    raw = decide({"x": 1e-5, "y": 0.5}, design=design, n_seeds=5, holm_family=False)
    holm = decide({"x": 1e-5, "y": 0.5}, design=design, n_seeds=5)
    assert raw["x"].decided and not holm["x"].decided  # 1e-5 < 1.47e-5 < 2e-5
    k2 = decide({"x": 0.3, "y": 1e-3, "z": 0.9}, design=design, n_seeds=10)
    first = first_decisions([k1, k2])
    assert first["x"].look == 1 and first["y"].look == 2 and first["z"] is None
    with pytest.raises(ValueError, match="no look after 7 seeds"):
        decide({"x": 0.1}, design=design, n_seeds=7)
    assert SequentialDesign.planned(batch=5, max_seeds=12).looks == (5, 10, 12)


def test_seeds_for_power_textbook_values():
    # Cohen (1988): d = 0.5 two groups needs 64 per group; paired d = 0.8 needs 15 pairs
    assert seeds_for_power(1.0, 0.5, paired=False) == 64
    assert seeds_for_power(2.0, 1.6) == 15
    assert seeds_for_power(1.0, -0.8) == 15
    with pytest.raises(ValueError):
        seeds_for_power(0.0, 1.0)


@pytest.mark.parametrize("paired", [True, False])
def test_seeds_for_power_against_monte_carlo(paired):
    rng = np.random.default_rng(3)
    sd, effect, alpha, reps = 0.26, 0.24, 0.0125, 20_000
    n = seeds_for_power(sd, effect, alpha=alpha, power=0.8, paired=paired)

    def mc_power(m: int) -> float:
        if paired:
            x = rng.normal(effect, sd, (reps, m))
            p = sps.ttest_1samp(x, 0.0, axis=1).pvalue
        else:
            a, b = rng.normal(effect, sd, (reps, m)), rng.normal(0.0, sd, (reps, m))
            p = sps.ttest_ind(a, b, axis=1).pvalue
        return float((p < alpha).mean())

    se = math.sqrt(0.8 * 0.2 / reps)
    at_n, below = mc_power(n), mc_power(n - 1)
    assert at_n == pytest.approx(t_power(n, sd=sd, effect=effect, alpha=alpha, paired=paired),
                                 abs=4 * se)
    assert at_n >= 0.8 - 4 * se and below < 0.8 + 4 * se
    assert below < at_n
