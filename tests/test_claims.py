"""The claims registry on synthetic rows: planted effects are found, absent ones are not, one
threshold for every model, untestable claims say so, censored values are bounds, one seed gives
a direction."""

import numpy as np
import pytest
from scipy import stats as sps

from flatgen.ladder import first_crossing
from flatgen.records import ATTACK_XT_LINF_T100, QUANT_W_TENSOR, STEPS_ADM, STEPS_DDIM
from flatgen.report.claims import CLAIMS, ClaimSpec, evaluate_claims, register, verdict_settings
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
    assert c.verdict == "reproduced"
    assert c.primary.test.test == "paired t" and c.primary.p_holm < 0.05
    lo, hi = c.primary.test.ci
    assert lo < -0.3 + 0.25 and hi < 0  # the interval excludes 0 and holds the planted -0.3
    # the same effect pointing the other way is contradicted, not merely "not reproduced"
    flipped = scalar_rows({"adm": rng.normal(1.0, 0.1, 5), "sam": rng.normal(1.3, 0.1, 5)})
    assert only(evaluate_claims(flipped, methods=["adm", "sam"]),
                "flatter_lambda_max").verdict == "contradicted"


def test_no_effect_is_called_significant_at_no_more_than_the_nominal_rate():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        rows = scalar_rows({"adm": rng.normal(1.0, 0.1, 5), "sam": rng.normal(1.0, 0.1, 5)})
        verdict = only(evaluate_claims(rows, methods=["adm", "sam"]), "flatter_lambda_max").verdict
        hits += verdict in ("reproduced", "contradicted")
        assert verdict in ("reproduced", "contradicted") or verdict.startswith(
            "inconclusive: no effect shown at n=5 seeds")
    assert 1 <= hits <= sps.binom.ppf(0.999, 200, 0.05)


def test_holm_adjusts_across_the_claims_primary_pairs_only():
    rng = np.random.default_rng(2)
    rows = [{"method": m, "seed": s, "metrics": {"lambda_max": float(rng.normal(mu, 0.1)),
                                                   "hessian_trace": float(rng.normal(mu, 0.1))}}
            for m, mu in (("adm", 1.3), ("sam", 1.0), ("ema", 1.3), ("sam+ema", 1.0))
            for s in range(5)]
    claims = evaluate_claims(rows, methods=METHODS)
    family = [c.primary for c in claims if c.primary.p_holm is not None]
    ps = sorted(c.test.p for c in family)
    assert min(c.p_holm for c in family) == pytest.approx(min(len(ps) * ps[0], 1))
    lam = only(claims, "flatter_lambda_max")
    (support,) = [s for s in lam.supporting if s.sample.a == "sam+ema"]
    assert support.p_holm is None and support.role == "supporting"


def test_all_models_share_one_threshold_and_a_worse_clean_score_buys_nothing():
    """adm's clean loss 0.2 (select_clean mean 0.2) -> tau = 0.3 for every model. sam starts 50%
    worse (0.3 clean) with the SAME absolute rise: with its own threshold (0.45) it would look
    more robust; with the shared one it crosses earlier."""
    rise = [0.02, 0.05, 0.1, 0.2, 0.4]
    adm = [ladder(EPS, c, [c + r for r in rise]) for c in (0.19, 0.2, 0.21)]
    sam = [ladder(EPS, c, [c + r for r in rise], select=False) for c in (0.29, 0.3, 0.31)]
    rows = ladder_rows(ATTACK_XT_LINF_T100, {"adm": adm, "sam": sam})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xt")
    s = c.primary.sample
    assert s.tau == pytest.approx(1.5 * np.mean([0.19, 0.2, 0.21]))
    for m, recs in (("adm", adm), ("sam", sam)):
        for seed, rec in enumerate(recs):
            assert s.values[m][seed] == first_crossing(EPS, rec["values"], s.tau,
                                                       clean=rec["clean"])[0]
    assert all(s.values["sam"][k] < s.values["adm"][k] for k in range(3))
    assert c.verdict != "reproduced"
    # the own-threshold rule would have favoured sam
    own = first_crossing(EPS, sam[1]["values"], 1.5 * 0.3, clean=0.3)[0]
    assert own > s.values["adm"][1]


def test_a_baseline_that_never_degrades_is_untestable_here():
    steps = [50, 20, 10, 5, 3]
    flat = [ladder(steps, 1.0, [1.0, 1.05, 1.1, 1.15, 1.2]) for _ in range(3)]
    rows = ladder_rows(STEPS_ADM, {"adm": flat, "sam": flat})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "few_step_sampling")
    assert c.verdict == ("untestable here: the baseline never degraded by 25% "
                         "(worst: +20% at T'=3)")
    assert c.primary.p_holm is None and "not reproduced" not in c.verdict
    # a threshold claim whose baseline never crosses tau is untestable too
    never = [ladder(EPS, 0.2, [0.21, 0.22, 0.23, 0.24, 0.25]) for _ in range(3)]
    rows = ladder_rows(ATTACK_XT_LINF_T100, {"adm": never, "sam": never})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "adversarial_xt")
    assert c.verdict.startswith("untestable here: the baseline never crossed 1.5x")


def test_degradation_is_judged_where_the_baselines_selection_noise_degrades():
    """The level comes from select_values (separate noise), not the values the test uses."""
    steps = [50, 20, 10, 5, 3]
    adm = [{**ladder(steps, 1.0, [1.0, 1.4, 2.0, 4.0, 8.0]),
            "select_values": [1.0, 1.1, 1.2, 1.31, 3.0]} for _ in range(3)]
    sam = [ladder(steps, 1.0, [1.0, 1.0, 1.5, 2.0 + 0.1 * k, 3.0], select=False)
           for k in range(3)]
    rows = ladder_rows(STEPS_ADM, {"adm": adm, "sam": sam})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "few_step_sampling")
    s = c.primary.sample
    assert s.level == 5 and s.regime == "T'=5 (baseline +31%)"
    assert s.values["sam"] == pytest.approx({0: 2.0, 1: 2.1, 2: 2.2})
    assert s.ratios == pytest.approx({"adm": 4.0, "sam": 2.1})
    assert c.verdict == "reproduced"  # paired: sam 2.0-2.2 vs adm 4.0 at every seed
    assert verdict_rows([c])[1][0][1] == "T'=5 (baseline +31%)"


def test_quantization_compares_the_rise_from_float():
    bits = [8, 6, 4, 3]
    adm = [ladder(bits, 1.0, [1.01, 1.1, 1.5, 3.0])]
    sam = [ladder(bits, 3.0, [3.0, 3.05, 3.1, 3.5], select=False)]
    rows = ladder_rows(QUANT_W_TENSOR, {"adm": adm, "sam": sam})
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "quantization")
    s = c.primary.sample
    assert s.level == 4 and s.regime == "float→4 bits per-tensor (baseline +50%)"
    assert s.values["adm"] == pytest.approx({0: 0.5}) and s.values["sam"] == pytest.approx({0: 0.1})
    assert c.verdict == "direction only (1 seed): claimed way"


def test_censored_levels_are_bounds_and_tested_by_ranks():
    """sam never crosses tau within the sweep in any of 5 seeds; adm always does."""
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
    (ddim,) = only(claims, "few_step_sampling").supporting
    assert ddim.sample.key == STEPS_DDIM and ddim.role == "supporting"


def test_worst_case_is_labelled_by_its_ascent():
    rows = scalar_rows({"adm": [2.0], "sam": [1.0]}, key="loss_increase_worst@0.5")
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "worst_case_loss")
    assert "SAM's own objective" in c.label
    for r in rows:
        r["metrics"]["perturbation_detail"] = {"worst_case": {"ascent": "pgd-filter"}}
    c = only(evaluate_claims(rows, methods=["adm", "sam"]), "worst_case_loss")
    assert "SAM does not run" in c.label


def test_a_new_claim_is_one_spec_and_verdict_settings_have_defaults():
    spec = ClaimSpec(id="toy", text="toy", source="here", kind="scalar", key="x",
                     direction="higher", pairs=(("sam", "adm"),))
    rows = scalar_rows({"adm": [1.0, 1.1, 0.9], "sam": [3.0, 3.2, 2.9]}, key="x")
    (c,) = evaluate_claims(rows, methods=["adm", "sam"], claims={"toy": spec})
    assert c.verdict == "reproduced"
    with pytest.raises(ValueError, match="registered twice"):
        register(ClaimSpec(id="flatter_lambda_max", text="", source="", kind="scalar", key="x",
                           direction="lower"))
    assert "flatter_lambda_max" in CLAIMS
    assert verdict_settings(object()) == {"margin": 0.25, "threshold_margin": 0.5, "alpha": 0.05}

    class Study:
        class verdicts:  # noqa: N801
            margin = 0.1

    assert verdict_settings(Study())["margin"] == 0.1
