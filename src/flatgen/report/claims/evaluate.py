"""Judge every registered claim: one test per pair, against zero AND against the source's effect.

Verdicts of a primary comparison (n >= 2 seeds):
- "reproduced": significant in the claimed direction (two-sided test against no effect);
- "contradicted": significant the other way;
- "excluded at the source's size": the one-sided test that the effect falls short of the
  source's (a two one-sided tests reading, at the same alpha) is significant, so the 1 - 2 alpha
  interval excludes the source's effect;
- "inconclusive at n=K (about N seeds would decide)": the interval still holds both;
- "untestable here: <reason>" where the baseline is not hurt.
"Reproduced" and "excluded" can both hold (a real effect far smaller than the source's): the
verdict then says "reproduced, smaller than the source's".

The family: each primary claim has the two hypotheses above; at most one of them can be true (an
effect cannot be both zero and the source's size), so the p-values are adjusted by Holm's
step-down with Shaffer's logical constraint (flatgen.stats.shaffer). `alpha` may be a look's
nominal level of a group-sequential design (report/sequential.py). Supporting comparisons use
the same words on their own unadjusted p; they are not counted as evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flatgen.records import MethodResult
from flatgen.report.claims.gather import GATHER, Sample, degradation_sample, ladder_levels
from flatgen.report.claims.registry import CLAIMS, ClaimContext, ClaimSpec, SourceEffect
from flatgen.report.claims.verdicts import Verdicts
from flatgen.report.sequential import seeds_for_power
from flatgen.stats import StatResult, direction, mean_std, paired, rank_test, shaffer, welch

POWER = 0.8  # the power the "seeds it would take" of an inconclusive row is computed for


@dataclass
class Comparison:
    """One (method, baseline) pair on one key: per-seed values, the tests and the verdict."""

    sample: Sample
    role: str  # "primary" | "supporting" | "level"
    test: StatResult | None = None
    claimed: bool | None = None  # the effect points the claimed way
    dir_only: str | None = None  # one seed: "claimed way" | "other way" | "tie"
    source: float | None = None  # the source's effect on this test's scale (None: none stated)
    p_excl: float | None = None  # one-sided p: the effect falls short of the source's
    p_holm: float | None = None  # adjusted p of the test against no effect
    p_excl_holm: float | None = None  # adjusted p of the exclusion test
    seeds_needed: int | None = None  # inconclusive: seeds for 80% power at the observed effect
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        s = self.sample
        return {
            "a": s.a, "b": s.b, "key": s.key, "role": self.role, "regime": s.regime,
            "values": {m: {str(k): v for k, v in d.items()} for m, d in s.values.items()},
            "censored": {m: {str(k): v for k, v in d.items()} for m, d in s.censored.items()},
            "level": s.level, "tau": s.tau, "ratios": s.ratios, "untestable": s.untestable,
            "first_degraded": s.first_degraded, "how_chosen": s.how_chosen,
            "clean_ratio": s.clean_ratio, "ratio_by_margin": s.ratio_by_margin,
            "test": self.test.as_dict() if self.test else None, "direction": self.dir_only,
            "source_effect": self.source, "p_excl": self.p_excl, "p_holm": self.p_holm,
            "p_excl_holm": self.p_excl_holm, "seeds_needed": self.seeds_needed,
            "verdict": self.verdict,
        }


@dataclass
class ClaimResult:
    spec: ClaimSpec
    key: str
    primary: Comparison
    supporting: list[Comparison] = field(default_factory=list)
    levels: list[Comparison] = field(default_factory=list)  # every ladder level, unadjusted
    label: str = ""
    effect_of_interest: SourceEffect | None = None
    decided_at: str | None = None  # sequential studies: the look that decided it

    @property
    def verdict(self) -> str:
        return self.primary.verdict

    @property
    def text(self) -> str:
        return self.spec.text

    @property
    def source(self) -> str:
        return self.spec.source

    def as_dict(self) -> dict[str, Any]:
        s, p = self.spec, self.primary
        t = p.test
        eoi = self.effect_of_interest
        return {
            "id": s.id, "title": s.title or s.text, "text": s.text, "source": s.source,
            "kind": s.kind, "key": self.key, "direction": s.direction, "statistic": s.statistic,
            "decides": s.decides, "label": self.label, "regime": p.sample.regime,
            "level": p.sample.level, "tau": p.sample.tau, "test": t.test if t else None,
            "effect": t.effect if t else None, "ci": list(t.ci) if t and t.ci else None,
            "effect_kind": "ratio" if t and t.log else "difference",
            "source_effect": p.source, "source_text": eoi.text if eoi else None,
            "source_stated": eoi.stated if eoi else None,
            "p": t.p if t else None, "p_holm": p.p_holm, "p_excl": p.p_excl,
            "p_excl_holm": p.p_excl_holm, "verdict": p.verdict, "decided_at": self.decided_at,
            "note": s.decides + (f"; {self.label}" if self.label else ""),
            "comparisons": [c.as_dict() for c in (p, *self.supporting)],
            "levels": [c.as_dict() for c in self.levels],
        }


def _test(sample: Sample, *, log: bool) -> StatResult:
    s = sample
    a, b = s.values[s.a], s.values[s.b]
    if any(s.censored[s.a].values()) or any(s.censored[s.b].values()):
        return rank_test(list(a.values()), list(b.values()), log=log,
                         censored_a=list(s.censored[s.a].values()),
                         censored_b=list(s.censored[s.b].values()))
    if set(a) == set(b):  # same seeds: same init, data order and evaluation noise
        seeds = sorted(a)
        return paired([a[k] for k in seeds], [b[k] for k in seeds], log=log)
    return welch(list(a.values()), list(b.values()), log=log)


def _a_higher(t: StatResult) -> bool | None:
    """Which way the effect points (None: exactly no difference)."""
    if t.test.startswith("Mann-Whitney"):
        mid = t.n_a * t.n_b / 2
        return None if t.statistic == mid else t.statistic > mid
    null = 1.0 if t.log else 0.0
    return None if t.effect == null else t.effect > null


def source_on_scale(effect: SourceEffect | None, sample: Sample, *, log: bool) -> float | None:
    """The source's effect in this test's units: a ratio for robust levels, else the relative
    effect times the baseline's mean statistic here."""
    if effect is None:
        return None
    if effect.scale == "ratio":
        return effect.value if log else None
    base = sample.base_mean()
    return None if log or base is None or base == 0 else effect.value * abs(base)


def seeds_needed(t: StatResult, *, alpha: float, power: float = POWER) -> int | None:
    """About how many seeds the test would need for `power` at the observed effect and spread
    (noncentral t; at least one more than now). None where the spread or the effect is zero."""
    if t.center is None or t.se is None or t.center == 0 or t.se == 0:
        return None
    paired = t.test == "paired t"
    sd = t.se * math.sqrt(t.n_a if paired else t.n_a * t.n_b / (t.n_a + t.n_b))
    try:
        n = seeds_for_power(sd, t.center, alpha=alpha, power=power, paired=paired,
                            max_seeds=10_000)
    except ValueError:  # more than 10,000: say so rather than a number
        return None
    return max(t.n_a + 1, n)


def judge(sample: Sample, spec: ClaimSpec, *, role: str,
          effect: SourceEffect | None = None) -> Comparison:
    """Run the pair's tests (no verdict yet for the primary one: the family adjusts it)."""
    c = Comparison(sample, role)
    if sample.untestable:
        c.verdict = f"untestable here: {sample.untestable}"
        return c
    va, vb = sample.values[sample.a], sample.values[sample.b]
    if len(va) < 2 or len(vb) < 2:
        c.dir_only = direction(mean_std(list(va.values()))[0], mean_std(list(vb.values()))[0],
                               claimed=spec.direction)
        c.verdict = f"direction only (1 seed): {c.dir_only}"
        return c
    log = spec.kind == "threshold"
    c.test = _test(sample, log=log)
    higher = _a_higher(c.test)
    c.claimed = None if higher is None else higher == (spec.direction == "higher")
    c.source = source_on_scale(effect, sample, log=log)
    if c.source is not None:
        # H0: the effect reaches the source's size; H1: it falls short of it (on the null side)
        short = "greater" if spec.direction == "lower" else "less"
        c.p_excl = c.test.one_sided_p(c.source, alternative=short)
    return c


def decide(c: Comparison, p: float, p_excl: float | None, *, alpha: float) -> str:
    significant = p < alpha and c.claimed is not None
    excluded = p_excl is not None and p_excl < alpha
    if significant and c.claimed:
        return "reproduced, smaller than the source's" if excluded else "reproduced"
    if significant:
        return "contradicted"
    if excluded:
        return "excluded at the source's size"
    na, nb = len(c.sample.values[c.sample.a]), len(c.sample.values[c.sample.b])
    n = na if na == nb else f"{na}/{nb}"
    c.seeds_needed = seeds_needed(c.test, alpha=alpha) if c.test else None
    more = f" (about {c.seeds_needed} seeds would decide)" if c.seeds_needed else ""
    return f"inconclusive at n={n}{more}"


DECIDED = ("reproduced", "contradicted", "excluded", "untestable")


def is_decided(verdict: str) -> bool:
    return verdict.startswith(DECIDED)


def _claim(spec: ClaimSpec, ctx: ClaimContext) -> ClaimResult | None:
    key = spec.resolve_key(ctx)
    if key is None or any(m not in ctx.methods for m in spec.primary):
        return None
    gather = GATHER[spec.kind]
    a, b = spec.primary
    primary = gather(spec, ctx, key=key, a=a, b=b)
    if primary is None:  # only claims whose data exist are shown
        return None
    effect = spec.effect_of_interest(ctx.verdicts)
    samples = [s for x, y in spec.pairs[1:] if x in ctx.methods and y in ctx.methods
               and (s := gather(spec, ctx, key=key, a=x, b=y))]
    samples += [s for k in spec.supporting_keys if (s := gather(spec, ctx, key=k, a=a, b=b))]
    levels: list[Sample] = []
    if spec.kind == "degradation":
        # the first-degraded level is a secondary reading; every level is shown beside
        if primary.first_degraded not in (None, primary.level):
            first = degradation_sample(spec, ctx, key=key, a=a, b=b, level=primary.first_degraded)
            if first is not None:
                first.how_chosen = "first degraded (secondary)"
                samples.append(first)
        levels = [s for lv in ladder_levels(ctx, key, b)
                  if (s := degradation_sample(spec, ctx, key=key, a=a, b=b, level=lv))]
    return ClaimResult(
        spec, key, judge(primary, spec, role="primary", effect=effect),
        [judge(s, spec, role="supporting", effect=effect) for s in samples],
        [judge(s, spec, role="level", effect=effect) for s in levels],
        label=spec.label(ctx) if spec.label else "", effect_of_interest=effect)


def evaluate_claims(
    rows: Sequence[MethodResult], *, methods: Sequence[str], steps: Sequence[int] = (20, 100),
    metric: str = "w2", verdicts: Verdicts | None = None,
    claims: Mapping[str, ClaimSpec] | None = None, alpha: float | None = None,
) -> list[ClaimResult]:
    """Judge each registered claim whose data this study has (in registry order). `alpha`
    overrides verdicts.alpha (a sequential look's nominal level)."""
    verdicts = verdicts or Verdicts()
    level = verdicts.alpha if alpha is None else alpha
    ctx = ClaimContext(rows=rows, methods=list(methods), quality_metric=metric, steps=list(steps),
                       verdicts=verdicts)
    results = [r for spec in (CLAIMS if claims is None else claims).values()
               if (r := _claim(spec, ctx)) is not None]
    family = [r.primary for r in results if r.primary.test is not None and r.spec.in_family]
    # two hypotheses per claim (no effect; the source's effect), at most one of them true
    pvals = [c.test.p for c in family] + [c.p_excl for c in family if c.p_excl is not None]
    groups = list(range(len(family))) + [i for i, c in enumerate(family) if c.p_excl is not None]
    adjusted = shaffer(pvals, groups)
    for i, c in enumerate(family):
        c.p_holm = adjusted[i]
    for j, i in enumerate(i for i, c in enumerate(family) if c.p_excl is not None):
        family[i].p_excl_holm = adjusted[len(family) + j]
    for c in family:
        c.verdict = decide(c, c.p_holm, c.p_excl_holm, alpha=level)
    for r in results:
        for c in (r.primary, *r.supporting, *r.levels):
            if not c.verdict and c.test is not None:  # supporting: their own unadjusted p
                c.verdict = decide(c, c.test.p, c.p_excl, alpha=verdicts.alpha)
                if c is r.primary:  # a supporting claim: not evidence of the family's weight
                    c.verdict += " (supporting, unadjusted p)"
    return results
