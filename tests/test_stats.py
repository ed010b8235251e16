"""flatgen.stats: the t tests match scipy's, the rank test is exact with ties and censoring, Holm
is Holm, and a study without an effect is called significant at no more than the nominal rate."""

import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats as sps

from flatgen.stats import direction, holm, mean_std, paired, rank_test, shaffer, welch

A = [1.2, 0.7, 1.9, 1.4, 1.1]
B = [0.4, 0.9, 0.2, 0.8, 0.5, 0.1]


def test_mean_std_hand_values():
    assert mean_std([1, 2, 3, 4]) == (2.5, pytest.approx(math.sqrt(5 / 3)))
    assert mean_std([7.0]) == (7.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))


def test_welch_matches_scipy():
    r = welch(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p == pytest.approx(ref.pvalue)
    assert r.df == pytest.approx(ref.df)
    assert r.effect == pytest.approx(np.mean(A) - np.mean(B))
    assert r.ci == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert (r.n_a, r.n_b) == (5, 6)


def test_paired_matches_scipy():
    b = B[:5]
    r = paired(A, b)
    ref = sps.ttest_rel(A, b)
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p == pytest.approx(ref.pvalue)
    assert r.ci == pytest.approx(tuple(ref.confidence_interval(0.95)))
    with pytest.raises(ValueError):
        paired(A, B)


def test_log_effect_is_the_ratio_of_geometric_means():
    a, b = [0.2, 0.25, 0.3], [0.1, 0.12, 0.09]
    r = welch(a, b, log=True)
    ref = sps.ttest_ind(np.log(a), np.log(b), equal_var=False)
    assert r.effect == pytest.approx(sps.gmean(a) / sps.gmean(b))
    lo, hi = ref.confidence_interval(0.95)
    assert r.ci == pytest.approx((math.exp(lo), math.exp(hi)))
    assert r.p == pytest.approx(ref.pvalue)


def test_rank_test_without_ties_is_scipys_exact_mann_whitney():
    r = rank_test(A, B)
    ref = sps.mannwhitneyu(A, B, method="exact")
    assert r.statistic == ref.statistic and r.p == pytest.approx(ref.pvalue)


def test_rank_test_with_ties_is_the_exact_permutation_test():
    a, b = [1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 3.0, 4.0, 4.0]
    r = rank_test(a, b)
    ranks = sps.rankdata(a + b)
    u = lambda x, y, axis: np.sum(x, axis=axis) - len(a) * (len(a) + 1) / 2  # noqa: E731
    ref = sps.permutation_test((ranks[:4], ranks[4:]), u, permutation_type="independent",
                               alternative="two-sided", n_resamples=10**6, vectorized=True)
    assert r.p == pytest.approx(ref.pvalue)
    assert r.statistic == pytest.approx(u(ranks[:4], None, 0))


def test_censored_values_rank_above_their_bound_and_have_no_interval():
    # a's last value is censored at the sweep's end 0.5, where one of b's crossed exactly
    a, b = [0.3, 0.4, 0.5], [0.1, 0.2, 0.5]
    r = rank_test(a, b, censored_a=[False, False, True], log=True)
    assert r.ci is None and r.test.startswith("Mann-Whitney")
    # ranks: b 1,2 ; a 3,4 ; b's 0.5 -> 5 ; a's censored 0.5 -> 6: U_a = 13 - 6 = 7
    assert r.statistic == 7
    # exact: relabellings of ranks 1..6 into 3 with |U - 4.5| >= 2.5 -> U in {0,1,2,7,8,9}
    us = [sum(c) - 6 for c in combinations(range(1, 7), 3)]
    assert r.p == pytest.approx(np.mean([abs(x - 4.5) >= 2.5 for x in us]))


def test_holm_hand_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_direction_only_and_ties():
    assert direction(1.0, 2.0, claimed="lower") == "claimed way"
    assert direction(1.0, 2.0, claimed="higher") == "other way"
    assert direction(2.0, 2.0, claimed="lower") == "tie"


@pytest.mark.parametrize("test", ["welch", "paired", "rank"])
def test_no_effect_is_significant_at_no_more_than_the_nominal_rate(test):
    """200 studies of 5 seeds without an effect: the count with p < 0.05 stays within the upper
    99.9% binomial bound of the nominal 5% (and the tests are not dead: some do fire)."""
    rng = np.random.default_rng(12)
    hits = 0
    for _ in range(200):
        a, b = rng.normal(1.0, 0.1, 5), rng.normal(1.0, 0.1, 5)
        r = {"welch": welch, "paired": paired, "rank": rank_test}[test](a, b)
        hits += r.p < 0.05
    assert hits <= sps.binom.ppf(0.999, 200, 0.05)
    assert hits >= 1  # the test can fire at all


def test_planted_effect_of_three_sd_is_found():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 5), rng.normal(3.0, 1.0, 5)
    assert welch(a, b).p < 0.05 and welch(a, b).ci[1] < 0


def test_one_sided_p_matches_scipys_one_sample_t():
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.0, 0.3, 6), rng.normal(1.4, 0.3, 6)
    t = paired(list(a), list(b))
    for null, alt in ((-0.8, "greater"), (0.1, "less")):
        ref = sps.ttest_1samp(a - b, null, alternative=alt).pvalue
        assert t.one_sided_p(null, alternative=alt) == pytest.approx(ref)
    r = paired(list(np.exp(a)), list(np.exp(b)), log=True)  # a ratio's null on the log scale
    ref = sps.ttest_1samp(a - b, np.log(0.5), alternative="greater").pvalue
    assert r.one_sided_p(0.5, alternative="greater") == pytest.approx(ref)
    assert rank_test([1.0, 2.0], [3.0, 4.0]).one_sided_p(0.0, alternative="less") is None


def test_shaffer_hand_values_and_holm_as_its_special_case():
    p = [0.01, 0.04, 0.03, 0.5]
    assert shaffer(p, [0, 1, 2, 3]) == pytest.approx(holm(p))
    # two claims, two hypotheses each: at most two nulls can be true at first
    adj = shaffer([0.01, 0.02, 0.03, 0.04], ["x", "x", "y", "y"])
    # 0.01: 2 groups open -> 0.02; 0.02: x still open (one left) -> 2*0.02 = 0.04; then x closed:
    # 0.03: 1 group open -> max(0.04, 0.03) = 0.04; 0.04: 1 -> 0.04
    assert adj == pytest.approx([0.02, 0.04, 0.04, 0.04])
