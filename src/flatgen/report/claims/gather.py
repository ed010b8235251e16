"""Per-seed statistics of one (method, baseline) pair on one key, for each kind of claim.

scalar: the metric per seed. degradation: the ladder's score (or its rise from clean) at the level
where the baseline first degrades on its selection noise. threshold: the level where each model's
score first crosses ONE threshold, (1 + threshold_margin) x the baseline's mean selection clean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flatgen.ladder import degraded_level, first_crossing
from flatgen.report.claims.registry import ClaimContext, ClaimSpec
from flatgen.report.stats import mean_std


@dataclass
class Sample:
    """What a pair's test needs: seed -> statistic (and censoring) per side, and the regime."""

    a: str
    b: str
    key: str
    values: dict[str, dict[int, float]]
    censored: dict[str, dict[int, bool]]
    regime: str = ""
    untestable: str | None = None
    level: float | None = None  # the judged level (degradation)
    tau: float | None = None  # the shared threshold (threshold)
    ratios: dict[str, float] = field(default_factory=dict)  # degradation ratio value/clean


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _seed_rows(ctx: ClaimContext, method: str) -> dict[int, dict]:
    return {int(r["seed"]): r["metrics"] for r in ctx.rows if r["method"] == method}


def _ladders(ctx: ClaimContext, method: str, key: str) -> dict[int, dict]:
    return {
        s: rec
        for s, m in _seed_rows(ctx, method).items()
        if isinstance(rec := (m.get("ladders") or {}).get(key), dict)
    }


def _mean_per_level(records: list[dict], field_name: str) -> list[float | None]:
    """Mean over seeds of a per-level list; None at a level no seed measured."""
    n = len(records[0]["levels"])
    out: list[float | None] = []
    for i in range(n):
        vals = [v for rec in records if _finite(v := rec[field_name][i])]
        out.append(mean_std(vals)[0] if vals else None)
    return out


def _selection(base: dict[int, dict], b: str) -> tuple[list, list[float | None], float] | str:
    """The baseline's levels, mean selection values and mean selection clean; or why not."""
    recs = [
        r
        for r in base.values()
        if r.get("select_values") is not None and _finite(r.get("select_clean"))
    ]
    if not recs:
        return (
            f"no selection ladder for the baseline {b} (separate noise; add it to "
            "evaluations.selection_methods)"
        )
    levels = list(recs[0]["levels"])
    if any(list(r["levels"]) != levels for r in recs):
        return f"the baseline {b}'s seeds measured different levels"
    return (
        levels,
        _mean_per_level(recs, "select_values"),
        mean_std([r["select_clean"] for r in recs])[0],
    )


def scalar_sample(spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str) -> Sample | None:
    values: dict[str, dict[int, float]] = {}
    censored: dict[str, dict[int, bool]] = {}
    for m in (a, b):
        rows = _seed_rows(ctx, m)
        values[m] = {s: float(r[key]) for s, r in rows.items() if _finite(r.get(key))}
        censored[m] = {s: bool(rows[s].get(f"{key}_censored")) for s in values[m]}
    if not values[a] or not values[b]:
        return None
    return Sample(a, b, key, values, censored, regime=spec.extra.get("regime", key))


def _ladder_start(
    ctx: ClaimContext, *, key: str, a: str, b: str
) -> Sample | None | tuple[dict, Sample, tuple]:
    """Both models' ladder records and the baseline's selection means, or what to return early:
    None where a side was not measured, an untestable Sample where the selection is missing."""
    recs = {m: _ladders(ctx, m, key) for m in (a, b)}
    if not recs[a] or not recs[b]:
        return None
    sample = Sample(a, b, key, {a: {}, b: {}}, {a: {}, b: {}})
    sel = _selection(recs[b], b)
    if isinstance(sel, str):
        sample.untestable = sel
        return sample
    return recs, sample, sel


def degradation_sample(
    spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str
) -> Sample | None:
    start = _ladder_start(ctx, key=key, a=a, b=b)
    if not isinstance(start, tuple):
        return start
    recs, sample, (levels, mean_sel, clean) = start
    name = spec.level_name
    sample.regime = f"{name}={levels[0]:g} to {name}={levels[-1]:g} ({key})"
    idx = degraded_level(levels, mean_sel, clean, margin=ctx.margin)
    if idx is None:
        rises = [
            (v / clean - 1, lv) for lv, v in zip(levels, mean_sel, strict=True) if v is not None
        ]
        worst = max(rises, default=(math.nan, math.nan))
        sample.untestable = (
            f"the baseline never degraded by {ctx.margin:.0%} (worst: "
            f"{worst[0]:+.0%} at {name}={worst[1]:g})"
        )
        return sample
    level = float(levels[idx])
    sample.level = level
    sample.regime = (
        spec.level_format.format(level=level) + f" (baseline {mean_sel[idx] / clean - 1:+.0%})"
    )
    for m in (a, b):
        ratios = []
        for seed, rec in recs[m].items():
            at = [i for i, lv in enumerate(rec["levels"]) if float(lv) == level]
            v, c = (rec["values"][at[0]] if at else None), rec.get("clean")
            if not _finite(v) or not _finite(c):
                continue
            sample.values[m][seed] = v - c if spec.statistic == "rise" else v
            sample.censored[m][seed] = False
            ratios.append(v / c)
        if ratios:
            sample.ratios[m] = mean_std(ratios)[0]
    if not sample.values[a] or not sample.values[b]:
        missing = a if not sample.values[a] else b
        sample.untestable = f"level {level:g} was not measured for {missing}"
    return sample


def threshold_sample(
    spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str
) -> Sample | None:
    start = _ladder_start(ctx, key=key, a=a, b=b)
    if not isinstance(start, tuple):
        return start
    recs, sample, (levels, mean_sel, clean) = start
    tau = (1 + ctx.threshold_margin) * clean  # ONE threshold for every model of the comparison
    sample.tau = tau
    sample.regime = f"threshold {1 + ctx.threshold_margin:g}x baseline clean (τ={tau:.3g})"
    _, never = first_crossing(levels, mean_sel, tau, clean=clean)
    if never:
        sample.untestable = (
            f"the baseline never crossed {1 + ctx.threshold_margin:g}x its clean "
            f"score within the sweep (up to {levels[-1]:g})"
        )
        return sample
    for m in (a, b):
        for seed, rec in recs[m].items():
            if not _finite(rec.get("clean")):
                continue
            lvl, cens = first_crossing(rec["levels"], rec["values"], tau, clean=rec["clean"])
            sample.values[m][seed], sample.censored[m][seed] = lvl, cens
    return sample


GATHER = {"scalar": scalar_sample, "degradation": degradation_sample, "threshold": threshold_sample}
