"""Per-seed statistics of one (method, baseline) pair on one key, for each kind of claim.

scalar: the metric per seed. degradation: the ladder's score (or its rise from clean) at the level
fixed before the run (verdicts.levels, the claim's default, else the level whose baseline
degradation on the selection noise is closest to the source's). threshold: the level where each
model's score first rises above its OWN clean score by m x the baseline's clean score (one m for
every model, so a model is not charged for where it starts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flatgen.ladder import degraded_level, first_crossing
from flatgen.records import LadderRecord, ladders_of
from flatgen.report.claims.registry import ClaimContext, ClaimSpec
from flatgen.stats import mean_std


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
    tau: float | None = None  # the rise threshold m x baseline clean (threshold)
    ratios: dict[str, float] = field(default_factory=dict)  # degradation ratio value/clean
    # degradation: the level where the baseline first degrades by the margin (secondary reading)
    first_degraded: float | None = None
    # threshold: the baseline's clean score over the method's, and the robust-level ratio
    # (geometric mean a/b) at each margin shown
    clean_ratio: float | None = None
    ratio_by_margin: dict[str, float | None] = field(default_factory=dict)
    how_chosen: str = ""  # how the judged level was fixed

    def base_mean(self) -> float | None:
        """The baseline's mean statistic: the scale of a relative source effect."""
        vals = list(self.values.get(self.b, {}).values())
        return mean_std(vals)[0] if vals else None


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _seed_rows(ctx: ClaimContext, method: str) -> dict[int, dict]:
    return {int(r["seed"]): r["metrics"] for r in ctx.rows if r["method"] == method}


def _ladders(ctx: ClaimContext, method: str, key: str) -> dict[int, LadderRecord]:
    return {int(r["seed"]): rec for r in ctx.rows if r["method"] == method
            and isinstance(rec := ladders_of(r).get(key), dict)}


def _mean_per_level(records: list[LadderRecord], field_name: str) -> list[float | None]:
    """Mean over seeds of a per-level list; None at a level no seed measured."""
    n = len(records[0]["levels"])
    out: list[float | None] = []
    for i in range(n):
        vals = [v for rec in records if _finite(v := (rec.get(field_name) or [None] * n)[i])]
        out.append(mean_std(vals)[0] if vals else None)
    return out


def _baseline_curve(base: dict[int, LadderRecord]) -> tuple[list, list, float, str] | str:
    """The baseline's levels, mean values and mean clean on its selection noise (the seeds that
    have it), else on the verdict noise; and which; or why there is none."""
    recs = list(base.values())
    sel = [r for r in recs if r.get("select_values") is not None and _finite(r.get("select_clean"))]
    levels = list(recs[0]["levels"])
    if any(list(r["levels"]) != levels for r in recs):
        return "the baseline's seeds measured different levels"
    if sel:
        return (levels, _mean_per_level(sel, "select_values"),
                mean_std([r["select_clean"] for r in sel])[0], "selection noise")
    cleans = [r["clean"] for r in recs if _finite(r.get("clean"))]
    if not cleans:
        return "the baseline has no clean score"
    return levels, _mean_per_level(recs, "values"), mean_std(cleans)[0], "verdict noise"


def _ladder_start(ctx: ClaimContext, *, key: str, a: str, b: str):
    """Both sides' ladder records, an empty Sample and the baseline's curve; or what to return
    early: None where a side was not measured, an untestable Sample without a baseline curve."""
    recs = {m: _ladders(ctx, m, key) for m in (a, b)}
    if not recs[a] or not recs[b]:
        return None
    sample = Sample(a, b, key, {a: {}, b: {}}, {a: {}, b: {}})
    curve = _baseline_curve(recs[b])
    if isinstance(curve, str):
        sample.untestable = curve
        return sample
    return recs, sample, curve


def scalar_sample(spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str) -> Sample | None:
    values: dict[str, dict[int, float]] = {}
    censored: dict[str, dict[int, bool]] = {}
    for m in (a, b):
        rows = _seed_rows(ctx, m)
        values[m] = {s: float(r[key]) for s, r in rows.items() if _finite(r.get(key))}
        censored[m] = {s: bool(rows[s].get(f"{key}_censored")) for s in values[m]}
    if not values[a] or not values[b]:
        return None
    regime = spec.extra.get("regime", key)  # a text, or a function of the key
    return Sample(a, b, key, values, censored, regime=regime(key) if callable(regime) else regime)


def _judged_level(spec: ClaimSpec, ctx: ClaimContext, levels: list, curve: list,
                  clean: float) -> tuple[float | None, str]:
    """The level fixed before the run, or (without one) the level whose baseline degradation
    is closest to the source's on the selection noise; and how it was fixed."""
    fixed = ctx.verdicts.levels.get(spec.id, spec.default_level)
    if fixed is not None:
        how = "pre-registered" if spec.id in ctx.verdicts.levels else "claim's default"
        return float(fixed), how
    src = spec.effect_of_interest(ctx.verdicts)
    if src is None or src.degradation is None:
        idx = degraded_level(levels, curve, clean, margin=ctx.verdicts.margin)
        return (None if idx is None else float(levels[idx])), "first degraded (selection noise)"
    ratios = [(abs(math.log(v / clean) - math.log(src.degradation)), lv)
              for lv, v in zip(levels, curve, strict=True) if _finite(v) and v > 0 < clean]
    return (min(ratios)[1] if ratios else None), "closest to the source's degradation"


def degradation_sample(
    spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str, level: float | None = None
) -> Sample | None:
    """`level` given: that level (the per-level readings); else the judged one."""
    start = _ladder_start(ctx, key=key, a=a, b=b)
    if not isinstance(start, tuple):
        return start
    recs, sample, (levels, mean_base, clean, noise) = start
    name, margin = spec.level_name, ctx.verdicts.margin
    first = degraded_level(levels, mean_base, clean, margin=margin)
    sample.first_degraded = None if first is None else float(levels[first])
    if level is None:
        level, sample.how_chosen = _judged_level(spec, ctx, levels, mean_base, clean)
    else:
        sample.how_chosen = "every level"
    at = [i for i, lv in enumerate(levels) if level is not None and float(lv) == level]
    if not at:
        sample.untestable = (f"the baseline never degraded by {margin:.0%}" if level is None else
                             f"{name}={level:g} was not measured")
        return sample
    sample.level = level
    base_rise = (mean_base[at[0]] or math.nan) / clean - 1
    # the baseline's degradation on the noise its level was checked on (selection noise where
    # measured), so the figure is not read against the verdict-noise means beside it
    sample.regime = (spec.level_format.format(level=level) + f" ({sample.how_chosen}; baseline "
                     f"{base_rise:+.0%} on {noise})")
    if not base_rise > margin:  # nothing breaks at this level: nothing to test
        sample.untestable = (f"the baseline degrades {base_rise:+.0%} at {name}={level:g} on its "
                             f"{noise}, under the {margin:.0%} margin")
        return sample
    for m in (a, b):
        ratios = []
        for seed, rec in recs[m].items():
            idx = [i for i, lv in enumerate(rec["levels"]) if float(lv) == level]
            v, c = (rec["values"][idx[0]] if idx else None), rec.get("clean")
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


def ladder_levels(ctx: ClaimContext, key: str, b: str) -> list[float]:
    """The levels of the baseline's ladder `key` (for the per-level readings)."""
    recs = _ladders(ctx, b, key)
    return [float(lv) for lv in next(iter(recs.values()))["levels"]] if recs else []


def _robust_levels(recs: dict[int, LadderRecord], rise: float) -> dict[int, tuple[float, bool]]:
    """seed -> (the level where score - own clean first exceeds `rise`, censored)."""
    out = {}
    for seed, rec in recs.items():
        if _finite(c := rec.get("clean")):
            out[seed] = first_crossing(rec["levels"], rec["values"], c + rise, clean=c)
    return out


def _geo_ratio(a: dict[int, tuple[float, bool]], b: dict[int, tuple[float, bool]]) -> float | None:
    va = [v for v, _ in a.values() if v > 0]
    vb = [v for v, _ in b.values() if v > 0]
    if not va or not vb:
        return None
    return math.exp(mean_std([math.log(v) for v in va])[0] - mean_std([math.log(v) for v in vb])[0])


def threshold_sample(
    spec: ClaimSpec, ctx: ClaimContext, *, key: str, a: str, b: str
) -> Sample | None:
    start = _ladder_start(ctx, key=key, a=a, b=b)
    if not isinstance(start, tuple):
        return start
    recs, sample, (levels, _, base_clean, noise) = start
    m = ctx.verdicts.threshold_margin
    # an absolute threshold is the claim's own score's (e.g. a share of flipped labels); other
    # scores beside it take the margin rule
    own = spec.extra.get("threshold_keys") or ((spec.key,) if isinstance(spec.key, str) else ())
    fixed = spec.threshold if key in own else None
    if fixed is not None:
        rise = fixed
        sample.regime = spec.extra.get("threshold_text", f"rise over own clean > {rise:g}")
    else:
        rise = m * base_clean
        sample.regime = f"rise over own clean > {m:g}x baseline clean ({noise}; {rise:.3g})"
    sample.tau = rise
    crossed = {side: _robust_levels(recs[side], rise) for side in (a, b)}
    for side in (a, b):
        for seed, (lvl, cens) in crossed[side].items():
            sample.values[side][seed], sample.censored[side][seed] = lvl, cens
    if all(c for side in (a, b) for _, c in crossed[side].values()):
        sample.untestable = (f"neither model's score rose by {rise:.3g} within the sweep "
                             f"(up to {levels[-1]:g})")
        return sample
    cleans = {side: [r["clean"] for r in recs[side].values() if _finite(r.get("clean"))]
              for side in (a, b)}
    if cleans[a] and cleans[b] and mean_std(cleans[b])[0] != 0:
        sample.clean_ratio = mean_std(cleans[a])[0] / mean_std(cleans[b])[0]
    if fixed is None:
        for shown in ctx.verdicts.threshold_margins_shown:
            r = shown * base_clean
            sample.ratio_by_margin[f"{shown:g}"] = _geo_ratio(_robust_levels(recs[a], r),
                                                              _robust_levels(recs[b], r))
    return sample


GATHER = {"scalar": scalar_sample, "degradation": degradation_sample, "threshold": threshold_sample}
