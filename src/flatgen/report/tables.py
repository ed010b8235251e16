"""The report's tables: the per-method summary, the verdict table, and the one markdown writer."""

from __future__ import annotations

import math
from collections.abc import Sequence

from flatgen.records import (
    EXPOSURE_GAP_L2_T20,
    EXPOSURE_GAP_SQ_T20,
    HESSIAN_TRACE,
    LAMBDA_MAX,
    ROBUSTNESS_DETAIL,
    ROBUSTNESS_METRIC,
    WORST,
    censored_key,
    float_quality_key,
    is_quality_key,
    loss_increase_key,
    quality_key,
    quant_quality_key,
)
from flatgen.report.claims import ClaimResult, Comparison
from flatgen.stats import mean_std

QUALITY_TITLES = {"w2": "W2", "digits_fid": "dFID"}
VERDICT_HEADER = ["claim (pair)", "judged at", "effect [95% CI]", "source's effect", "adj. p",
                  "verdict"]


def table_columns(metric: str, steps: Sequence[int] = (20, 100)) -> list[tuple[str, str, str]]:
    """(metric key, column title, format); the table shows those that were measured.

    `metric` is the quality metric the robustness suites used (digits_fid on digits, else w2).
    """
    q = QUALITY_TITLES.get(metric, metric)
    return [
        *[(quality_key("w2", k), f"W2 T'={k}", ".3f") for k in steps],
        *[(quality_key("digits_fid", k), f"dFID T'={k}", ".2f") for k in steps],
        (LAMBDA_MAX, "λmax", ".3g"),
        (HESSIAN_TRACE, "trace", ".3g"),
        (loss_increase_key(WORST, 0.1), "Δloss worst ρ=0.1", ".3g"),
        (EXPOSURE_GAP_L2_T20, "exposure gap L2 T'=20", ".3f"),
        (EXPOSURE_GAP_SQ_T20, "exposure gap sq. T'=20", ".3f"),
        (float_quality_key(metric), f"{q} float (n={{n}})", ".3f"),
        # weights-only quantization, per tensor (the quantization claim's primary ladder) and
        # per channel; robust eps / sigma are not columns: each is only meaningful against the
        # threshold a claim sets for its pair of models (see the verdict table)
        *[(quant_quality_key(metric, b, g), f"{q} {b}-bit {g}", ".3f")
          for g in ("tensor", "channel") for b in (8, 6, 4, 3)],
    ]


def quality_metric(rows: Sequence[dict]) -> str:
    """digits_fid where it was measured (it separates digits models; W2 in pixels does not)."""
    found = any(is_quality_key(k, "digits_fid") for r in rows for k in r["metrics"])
    return "digits_fid" if found else "w2"


def robustness_metric(rows: Sequence[dict]) -> str:
    """The quality metric the robustness suites were scored with."""
    return next((r["metrics"][ROBUSTNESS_METRIC] for r in rows
                 if ROBUSTNESS_METRIC in r["metrics"]), quality_metric(rows))


def scalar_metrics(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row["metrics"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def fmt_value(value: float, *, censored: bool = False, fmt: str = ".3g") -> str:
    """A value; one beyond the sweep is a bound: '≥ 0.1', never a number."""
    return f"{'≥ ' if censored else ''}{value:{fmt}}"


def summary_table(rows: Sequence[dict], methods: Sequence[str],
                  steps: Sequence[int] = (20, 100)) -> tuple[list[str], list[list[str]]]:
    """Paper-style table: mean ± std over seeds for each method and measured column."""
    metric = robustness_metric(rows)
    n = next((r["metrics"][ROBUSTNESS_DETAIL]["n_samples"] for r in rows
              if r["metrics"].get(ROBUSTNESS_DETAIL)), "?")
    present = [(k, t.replace("{n}", str(n)), f) for k, t, f in table_columns(metric, steps)
               if any(k in scalar_metrics(r) for r in rows)]
    header = ["method", "seeds"] + [title for _, title, _ in present]
    body = []
    for m in methods:
        mrows = [scalar_metrics(r) for r in rows if r["method"] == m]
        if not mrows:
            continue
        cells = [m, str(len(mrows))]
        for key, _, fmt in present:
            vals = [r[key] for r in mrows if key in r and math.isfinite(r[key])]
            if not vals:
                cells.append("—")
                continue
            mean, std = mean_std(vals)
            # a robust ε beyond the sweep counts as the largest ε tried: the mean is a lower bound
            cell = fmt_value(mean, censored=any(r.get(censored_key(key)) for r in mrows), fmt=fmt)
            cells.append(f"{cell} ± {std:{fmt}}" if len(vals) > 1 else cell)
        body.append(cells)
    return header, body


def fmt_effect(c: Comparison) -> str:
    """'+0.12 [+0.05, +0.19]' (difference), '×1.8 [1.2, 2.7]' (ratio); censored: a bound."""
    t = c.test
    if t is None:
        return "—"
    s = c.sample
    if t.log:
        text, ci = f"×{t.effect:.3g}", t.ci and f" [{t.ci[0]:.3g}, {t.ci[1]:.3g}]"
    else:
        text, ci = f"{t.effect:+.3g}", t.ci and f" [{t.ci[0]:+.3g}, {t.ci[1]:+.3g}]"
    cens_a, cens_b = any(s.censored[s.a].values()), any(s.censored[s.b].values())
    if cens_a and cens_b:
        return f"{text} (both sides censored: no bound)"
    if cens_a or cens_b:  # a's bound makes a/b, a-b a lower bound; b's an upper bound
        return f"{'≥' if cens_a else '≤'} {text} (censored)"
    return text + (ci or "")


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}" if p >= 0.001 else "<0.001"


def fmt_source(c: Comparison, r: ClaimResult) -> str:
    """The source's effect on this study's scale, and what it is: '-2.9 (−74% FID ...)'."""
    e = r.effect_of_interest
    if e is None:
        return "none stated"
    if c.source is None:
        return e.text
    value = f"×{c.source:.3g}" if c.test is not None and c.test.log else f"{c.source:+.3g}"
    return f"{value} ({e.text})"


def fmt_adjusted(c: Comparison) -> str:
    """The adjusted p of the test against no effect and, where the source's effect was tested,
    of the exclusion test: '0.002 / excl. 0.41'."""
    if c.p_holm is None:
        return f"{fmt_p(c.test.p)} (unadj.)" if c.test else "—"
    excl = f" / excl. {fmt_p(c.p_excl_holm)}" if c.p_excl_holm is not None else ""
    return fmt_p(c.p_holm) + excl


def verdict_rows(claims: Sequence[ClaimResult]) -> tuple[list[str], list[list[str]]]:
    """The verdict table: claim (pair), judged at, effect [95% CI], the source's effect on this
    study's scale, adjusted p (no effect / exclusion of the source's), verdict (primary pair)."""
    body = []
    for r in claims:
        p = r.primary
        pair = f"{p.sample.a} vs {p.sample.b}"
        verdict = p.verdict + (f" ({r.decided_at})" if r.decided_at else "")
        body.append([f"{r.spec.title or r.spec.id} ({pair})", p.sample.regime or "—",
                     fmt_effect(p), fmt_source(p, r), fmt_adjusted(p), verdict])
    return list(VERDICT_HEADER), body


def per_seed_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """seed | value of a | value of b; censored values as '≥'."""
    s = c.sample
    seeds = sorted(set(s.values[s.a]) | set(s.values[s.b]))

    def cell(m: str, seed: int) -> str:
        if seed not in s.values[m]:
            return "—"
        return fmt_value(s.values[m][seed], censored=s.censored[m].get(seed, False), fmt=".4g")

    return ["seed", s.a, s.b], [[str(k), cell(s.a, k), cell(s.b, k)] for k in seeds]
