"""The claims registry on synthetic rows: planted effects are found, absent ones are not, the
source's effect is excluded where the interval excludes it, levels are fixed before the run,
thresholds sit on each model's rise over its own clean score, untestable claims say so, censored
values are bounds, one seed gives a direction."""

import numpy as np
import pytest
from scipy import stats as sps

from flatgen.ladder import first_crossing
from flatgen.records import ATTACK_XT_LINF_T100, QUANT_W_TENSOR, STEPS_ADM, STEPS_DDIM
from flatgen.report.claims import (
    CLAIMS,
    ClaimSpec,
    SourceEffect,
    Verdicts,
    evaluate_claims,
    register,
)
from flatgen.report.tables import fmt_effect, per_seed_rows, verdict_rows

EPS = [0.01, 0.02, 0.05, 0.1, 0.2]
METHODS = ["adm", "ema", "sam", "sam+ema"]


def scalar_rows(values: dict[str, list[float]], key: str = "lambda_max") -> list[dict]:
    return [{"method": m, "seed": s, "metrics": {key: float(v)}}
            for m, vs in values.items() for s, v in enumerate(vs)]


def ladder(levels, clean, values, select=True):
    return {"levels": list(levels), "clean": clean, "values": list(values),
            "select_clean": clean if select else None,
            "select_values": list(values) if select else None}


def ladder_rows(key: str, per_method: dict[str, list[dict]]) -> list[dict]:
    return [{"method": m, "seed": s, "metrics": {"ladders": {key: rec}}}
            for m, recs in per_method.items() for s, rec in enumerate(recs)]


def only(claims, cid):
    (c,) = [c for c in claims if c.spec.id == cid]
    return c


def test_planted_effect_of_three_sd_with_five_seeds_is_reproduced():
    rng = np.random.default_rng(0)
    rows = scalar_rows({"adm": rng.normal(1.3, 0.1, 5), "sam": rng.normal(1.0, 0.1, 5)})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "flatter_lambda_max")
    assert c.verdict.startswith("reproduced")
    assert c.primary.test.test == "paired t" and c.primary.p_holm < 0.05
    lo, hi = c.primary.test.ci
    assert lo < -0.3 + 0.25 and hi < 0  # the interval excludes 0 and holds the planted -0.3
    # the same effect pointing the other way is contradicted, not merely "not reproduced"
    flipped = scalar_rows({"adm": rng.normal(1.0, 0.1, 5), "sam": rng.normal(1.3, 0.1, 5)})
    assert only(evaluate_claims(flipped, methods=["adm", "sam"]),
                "flatter_lambda_max").verdict == "contradicted"


SOURCE = ClaimSpec(id="toy_source", text="toy", source="here", kind="scalar", key="x",
                   direction="lower", pairs=(("sam", "adm"),),
                   source_effect=SourceEffect(-0.5, "relative", "-50%"))


def judge_toy(adm, sam, spec=SOURCE):
    rows = scalar_rows({"adm": adm, "sam": sam}, key="x")
    (c,) = evaluate_claims(rows, methods=["adm", "sam"], claims={spec.id: spec})
    return c


def test_three_way_verdict_against_the_source_effect():
    """The source reports a 50% cut. An effect of that size is reproduced; no effect measured
    tightly excludes it; a middling effect measured loosely is inconclusive and says how many
    seeds would decide."""
    rng = np.random.default_rng(3)
    base = rng.normal(10.0, 0.2, 6)
    full = judge_toy(list(base), list(base * 0.5 + rng.normal(0, 0.2, 6)))
    assert full.verdict == "reproduced"
    assert full.primary.source == pytest.approx(-0.5 * np.mean(base))
    zero = judge_toy(list(base), list(base + rng.normal(0, 0.2, 6)))
    assert zero.verdict == "excluded at the source's size"
    assert zero.primary.p_excl_holm < 0.05 < zero.primary.p_holm
    lo, hi = zero.primary.test.ci
    assert lo > zero.primary.source  # the interval lies above the source's -5
    wide = judge_toy([10.0, 10.0, 10.0], [6.0, 13.0, 8.5])
    assert wide.verdict.startswith("inconclusive at n=3 (about ")
    assert wide.primary.seeds_needed > 3
    lo, hi = wide.primary.test.ci
    assert lo < wide.primary.source < 0 < hi
    # a real effect far smaller than the source's: both readings, said as such
    small = judge_toy(list(base), list(base - 1.0 + rng.normal(0, 0.05, 6)))
    assert small.verdict == "reproduced, smaller than the source's"


def test_no_effect_is_called_significant_at_no_more_than_the_nominal_rate():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        rows = scalar_rows({"adm": rng.normal(1.0, 0.1, 5), "sam": rng.normal(1.0, 0.1, 5)})
        verdict = only(evaluate_claims(rows, methods=["adm", "sam"]), "flatter_lambda_max").verdict
        hits += verdict.startswith(("reproduced", "contradicted"))
        assert verdict.startswith(("reproduced", "contradicted", "excluded at the source's size",
                                   "inconclusive at n=5"))
    assert 1 <= hits <= sps.binom.ppf(0.999, 200, 0.05)


def test_the_family_is_adjusted_with_two_hypotheses_per_claim():
    """Holm with Shaffer's constraint: the first step divides by the number of claims (at most
    one of a claim's two nulls can be true), supporting pairs stay out."""
    rng = np.random.default_rng(2)
    rows = [{"method": m, "seed": s, "metrics": {"lambda_max": float(rng.normal(mu, 0.1)),
                                                   "hessian_trace": float(rng.normal(mu, 0.1))}}
            for m, mu in (("adm", 1.3), ("sam", 1.0), ("ema", 1.3), ("sam+ema", 1.0))
            for s in range(5)]
    claims = evaluate_claims(rows, methods=METHODS)
    family = [c.primary for c in claims if c.primary.p_holm is not None]
    ps = sorted([c.test.p for c in family] + [c.p_excl for c in family])
    assert min(c.p_holm for c in family) == pytest.approx(min(len(family) * ps[0], 1))
    lam = only(claims, "flatter_lambda_max")
    (support,) = [s for s in lam.supporting if s.sample.a == "sam+ema"]
    assert support.p_holm is None and support.role == "supporting"


def test_thresholds_sit_on_the_rise_over_each_models_own_clean_score():
    """sam starts 50% worse (clean 0.3 vs 0.2) and rises exactly as adm does: on the rise it is
    exactly as robust at every margin (the ratio does not hinge on m), and the clean-score ratio
    is reported beside it. A shared absolute threshold would have charged sam for its start."""
    rise = [0.03, 0.07, 0.12, 0.23, 0.41]
    adm = [ladder(EPS, c, [c + r for r in rise]) for c in (0.19, 0.2, 0.21)]
    sam = [ladder(EPS, c, [c + r for r in rise], select=False) for c in (0.29, 0.3, 0.31)]
    rows = ladder_rows(ATTACK_XT_LINF_T100, {"adm": adm, "sam": sam})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xt")
    s = c.primary.sample
    assert s.tau == pytest.approx(0.5 * np.mean([0.19, 0.2, 0.21]))  # m x baseline clean
    for m, recs in (("adm", adm), ("sam", sam)):
        for seed, rec in enumerate(recs):
            assert s.values[m][seed] == first_crossing(EPS, rec["values"], rec["clean"] + s.tau,
                                                       clean=rec["clean"])[0]
    assert s.values["sam"] == pytest.approx(s.values["adm"])
    assert s.clean_ratio == pytest.approx(1.5)
    assert set(s.ratio_by_margin) == {"0.25", "0.5", "1"}
    assert all(v == pytest.approx(1.0) for v in s.ratio_by_margin.values())
    # the old shared threshold 1.5 x adm's clean would have put sam's robust eps below adm's
    shared = 1.5 * 0.2
    assert first_crossing(EPS, sam[1]["values"], shared, clean=0.3)[0] < \
        first_crossing(EPS, adm[1]["values"], shared, clean=0.2)[0]


def test_a_level_where_the_baseline_is_not_hurt_is_untestable_here():
    steps = [50, 20, 10, 5, 3]
    flat = [ladder(steps, 1.0, [1.0, 1.05, 1.1, 1.15, 1.2]) for _ in range(3)]
    rows = ladder_rows(STEPS_ADM, {"adm": flat, "sam": flat})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "few_step_sampling")
    assert c.verdict.startswith("untestable here: the baseline degrades +20% at T'=3")
    assert c.primary.p_holm is None
    # a threshold claim where neither model's score rises enough is untestable too
    never = [ladder(EPS, 0.2, [0.21, 0.22, 0.23, 0.24, 0.25]) for _ in range(3)]
    rows = ladder_rows(ATTACK_XT_LINF_T100, {"adm": never, "sam": never})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xt")
    assert c.verdict.startswith("untestable here: neither model's score rose")


def test_the_judged_level_is_the_one_fixed_in_the_config():
    """verdicts.levels fixes the level before the run; the first-degraded level is a secondary
    reading, and every level is shown with its own effect."""
    steps = [50, 20, 10, 5, 3]
    adm = [{**ladder(steps, 1.0, [1.0, 1.4, 2.0, 4.0 + 0.1 * k, 8.0]),
            "select_values": [1.0, 1.1, 1.3, 3.8, 9.0]} for k in range(3)]
    sam = [ladder(steps, 1.0, [1.0, 1.0, 1.5, 2.0 + 0.1 * k, 3.0], select=False)
           for k in range(3)]
    rows = ladder_rows(STEPS_ADM, {"adm": adm, "sam": sam})
    fixed = Verdicts(levels={"few_step_sampling": 5})
    c = only(evaluate_claims(rows, methods=["adm", "sam"], verdicts=fixed), "few_step_sampling")
    s = c.primary.sample
    assert s.level == 5 and s.how_chosen == "pre-registered"
    assert s.regime == "T'=5 (pre-registered; baseline +280% on selection noise)"
    assert s.values["sam"] == pytest.approx({0: 2.0, 1: 2.1, 2: 2.2})
    assert c.verdict.startswith("reproduced")
    assert verdict_rows([c])[1][0][1] == s.regime
    (first,) = [x for x in c.supporting if x.sample.how_chosen.startswith("first degraded")]
    assert first.sample.level == 10 and first.p_holm is None  # selection +30% > 25% at T'=10
    assert [x.sample.level for x in c.levels] == [50, 20, 10, 5, 3]
    assert c.levels[0].verdict.startswith("untestable here")  # T'=50: the baseline is not hurt
    # without a fixed level: the level whose baseline degradation is closest to the source's
    # 3.9x (T'=5 at 3.8x on the selection noise), never the outcome's
    auto = only(evaluate_claims(rows, methods=["adm", "sam"]), "few_step_sampling")
    assert auto.primary.sample.level == 5
    assert auto.primary.sample.how_chosen == "closest to the source's degradation"


def test_quantization_compares_the_rise_from_float():
    bits = [8, 6, 4, 3]
    adm = [ladder(bits, 1.0, [1.01, 1.1, 1.5, 3.0])]
    sam = [ladder(bits, 3.0, [3.0, 3.05, 3.1, 3.5], select=False)]
    rows = ladder_rows(QUANT_W_TENSOR, {"adm": adm, "sam": sam})
    fixed = Verdicts(levels={"quantization": 4})
    c = only(evaluate_claims(rows, methods=["adm", "sam"], verdicts=fixed), "quantization")
    s = c.primary.sample
    assert s.level == 4
    assert s.regime == "float→4 bits (pre-registered; baseline +50% on selection noise)"
    assert s.values["adm"] == pytest.approx({0: 0.5}) and s.values["sam"] == pytest.approx({0: 0.1})
    assert c.verdict == "direction only (1 seed): claimed way"


def test_censored_levels_are_bounds_and_tested_by_ranks():
    """sam never rises enough within the sweep in any of 5 seeds; adm always does. A threshold
    crossed by either side is tested by ranks."""
    adm = [ladder(EPS, 0.2, [0.21, 0.25, 0.35, 0.5, 0.8]) for _ in range(5)]
    sam = [ladder(EPS, 0.2, [0.2, 0.21, 0.22, 0.23, 0.24 + 0.01 * k], select=False)
           for k in range(5)]
    rows = ladder_rows(ATTACK_XT_LINF_T100, {"adm": adm, "sam": sam})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xt")
    t = c.primary.test
    assert t.test == "Mann-Whitney U (exact permutation)" and t.ci is None
    assert t.p == pytest.approx(2 / 252)  # the most extreme of C(10, 5) relabellings, two-sided
    assert c.verdict == "reproduced"
    assert fmt_effect(c.primary).startswith("≥ ×")
    _, body = per_seed_rows(c.primary)
    assert all(row[1] == "≥ 0.2" for row in body)


def test_one_seed_gives_a_direction_and_ties_are_ties():
    c = only(evaluate_claims(scalar_rows({"adm": [2.0], "sam": [1.0]}), methods=["adm", "sam"]),
             "flatter_lambda_max")
    assert c.verdict == "direction only (1 seed): claimed way" and c.primary.test is None
    tie = only(evaluate_claims(scalar_rows({"adm": [1.0], "sam": [1.0]}), methods=["adm", "sam"]),
               "flatter_lambda_max")
    assert tie.verdict == "direction only (1 seed): tie"


def test_supporting_ladders_and_missing_data():
    steps = [50, 20, 10, 5, 3]
    deg = [ladder(steps, 1.0, [1.0, 1.1, 1.2, 2.0, 3.0]) for _ in range(2)]
    rows = ladder_rows(STEPS_ADM, {"adm": deg, "sam": deg})
    for r in rows:
        r["metrics"]["ladders"][STEPS_DDIM] = r["metrics"]["ladders"][STEPS_ADM]
    claims = evaluate_claims(rows, methods=["adm", "sam"])
    assert [c.spec.id for c in claims] == ["few_step_sampling"]  # only claims with data
    ddim = [s for s in only(claims, "few_step_sampling").supporting if s.sample.key == STEPS_DDIM]
    assert len(ddim) == 1 and ddim[0].role == "supporting"


def test_worst_case_is_labelled_by_its_ascent_and_never_in_the_family():
    rows = scalar_rows({"adm": [2.0, 2.1], "sam": [1.0, 1.1]}, key="loss_increase_worst@0.5")
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "worst_case_loss")
    assert "SAM's own objective" in c.label
    assert c.primary.p_holm is None and c.verdict.endswith("(supporting, unadjusted p)")
    for r in rows:
        r["metrics"]["perturbation_detail"] = {"worst_case": {"ascent": "pgd-filter"}}
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "worst_case_loss")
    assert "SAM does not run" in c.label


def test_a_new_claim_is_one_spec_and_verdicts_are_typed():
    spec = ClaimSpec(id="toy", text="toy", source="here", kind="scalar", key="x",
                     direction="higher", pairs=(("sam", "adm"),))
    rows = scalar_rows({"adm": [1.0, 1.1, 0.9], "sam": [3.0, 3.2, 2.9]}, key="x")
    (c,) = evaluate_claims(rows, methods=["adm", "sam"], claims={"toy": spec})
    assert c.verdict == "reproduced"
    with pytest.raises(ValueError, match="registered twice"):
        register(ClaimSpec(id="flatter_lambda_max", text="", source="", kind="scalar", key="x",
                           direction="lower"))
    assert "flatter_lambda_max" in CLAIMS
    v = Verdicts()
    assert (v.margin, v.threshold_margin, v.alpha) == (0.25, 0.5, 0.05)
    # a smallest effect of interest from the config replaces the claim's own
    eoi = CLAIMS["weight_noise"].effect_of_interest(Verdicts(smallest_effects={"weight_noise": 2}))
    assert eoi.value == 2 and eoi.scale == "ratio" and not eoi.stated


def test_a_pre_registered_level_must_be_one_the_study_measures():
    from pydantic import ValidationError

    from flatgen.study.config import StudyConfig

    ok = StudyConfig.model_validate({"verdicts": {"levels": {"few_step_sampling": 5,
                                                             "quantization": 4}}})
    assert ok.verdicts.levels == {"few_step_sampling": 5, "quantization": 4}
    for levels, message in (({"few_step_sampling": 7}, "7 is not a level the study measures"),
                            ({"few_step_sampling": 100}, "not a level"),  # the clean T'
                            ({"flatter_lambda_max": 5}, "is not judged on a ladder"),
                            ({"nope": 5}, "unknown claim")):
        with pytest.raises(ValidationError, match=message):
            StudyConfig.model_validate({"verdicts": {"levels": levels}})


def test_the_xT_flip_share_threshold_is_the_flip_ladders_only():
    """The x_T claim's absolute threshold (a quarter of the labels flip) judges the flip ladders;
    the set-level quality ladder beside it is judged by the margin rule on its own scale."""
    from flatgen.records import ATTACK_INIT_LINF, ATTACK_INIT_LINF_FLIP

    eps = [0.05, 0.1, 0.2, 0.5]
    flips = {"adm": [ladder(eps, 0.0, [0.1, 0.3, 0.6, 0.9])],
             "sam": [ladder(eps, 0.0, [0.0, 0.1, 0.4, 0.8], select=False)]}
    # dFID: clean 20; a rise of 0.25 dFID would be crossed at once, the margin rule (10) is not
    dfid = {"adm": [ladder(eps, 20.0, [20.5, 22.0, 31.0, 40.0])],
            "sam": [ladder(eps, 20.0, [20.4, 21.0, 26.0, 35.0], select=False)]}
    rows = ladder_rows(ATTACK_INIT_LINF_FLIP, flips)
    for r, d in zip(rows, ladder_rows(ATTACK_INIT_LINF, dfid), strict=True):
        r["metrics"]["ladders"] |= d["metrics"]["ladders"]
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xT")
    assert c.primary.sample.tau == 0.25 and "labels change" in c.primary.sample.regime
    (quality,) = [x for x in c.supporting if x.sample.key == ATTACK_INIT_LINF]
    assert quality.sample.tau == pytest.approx(0.5 * 20.0)
    assert "labels" not in quality.sample.regime
