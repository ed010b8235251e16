"""Judge every registered claim: one test per pair, Holm across the claims' primary pairs.

Verdicts: "reproduced" (Holm-adjusted p < alpha, the claimed direction), "contradicted"
(significant, the other direction), "inconclusive: no effect shown at n=K seeds", "untestable
here: <reason>" (the baseline is not hurt, nothing to judge), and with one seed "direction only
(1 seed): claimed way | other way | tie". Supporting comparisons use the same words on their own
unadjusted p; they are not counted as independent evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flatgen.report.claims.gather import GATHER, Sample
from flatgen.report.claims.registry import CLAIMS, ClaimContext, ClaimSpec
from flatgen.report.stats import StatResult, direction, holm, mean_std, paired, rank_test, welch

VERDICT_DEFAULTS = {"margin": 0.25, "threshold_margin": 0.5, "alpha": 0.05}


@dataclass
class Comparison:
    """One (method, baseline) pair on one key: per-seed values, the test and its verdict."""

    sample: Sample
    role: str  # "primary" | "supporting"
    test: StatResult | None = None
    claimed: bool | None = None  # the effect points the claimed way
    dir_only: str | None = None  # one seed: "claimed way" | "other way" | "tie"
    p_holm: float | None = None
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        s = self.sample
        return {
            "a": s.a, "b": s.b, "key": s.key, "role": self.role, "regime": s.regime,
            "values": {m: {str(k): v for k, v in d.items()} for m, d in s.values.items()},
            "censored": {m: {str(k): v for k, v in d.items()} for m, d in s.censored.items()},
            "level": s.level, "tau": s.tau, "ratios": s.ratios, "untestable": s.untestable,
            "test": self.test.as_dict() if self.test else None, "direction": self.dir_only,
            "p_holm": self.p_holm, "verdict": self.verdict,
        }


@dataclass
class ClaimResult:
    spec: ClaimSpec
    key: str
    primary: Comparison
    supporting: list[Comparison] = field(default_factory=list)
    label: str = ""

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
        return {
            "id": s.id, "text": s.text, "source": s.source, "kind": s.kind, "key": self.key,
            "direction": s.direction, "statistic": s.statistic, "decides": s.decides,
            "label": self.label, "regime": p.sample.regime, "level": p.sample.level,
            "tau": p.sample.tau, "test": t.test if t else None,
            "effect": t.effect if t else None, "ci": list(t.ci) if t and t.ci else None,
            "effect_kind": "ratio" if t and t.log else "difference",
            "p": t.p if t else None, "p_holm": p.p_holm, "verdict": p.verdict,
            "note": s.decides + (f"; {self.label}" if self.label else ""),
            "comparisons": [c.as_dict() for c in (p, *self.supporting)],
        }


def verdict_settings(study: Any) -> dict[str, float]:
    """margin, threshold_margin, alpha from `study.verdicts` where the config has it."""
    section = getattr(study, "verdicts", None)
    return {k: float(getattr(section, k, d) if section is not None else d)
            for k, d in VERDICT_DEFAULTS.items()}


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


def judge(sample: Sample, spec: ClaimSpec, *, role: str) -> Comparison:
    """Run the pair's test (no verdict yet for the primary one: Holm needs the family)."""
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
    c.test = _test(sample, log=spec.kind == "threshold")
    higher = _a_higher(c.test)
    c.claimed = None if higher is None else higher == (spec.direction == "higher")
    return c


def decide(c: Comparison, p: float, *, alpha: float) -> str:
    if p < alpha and c.claimed is not None:
        return "reproduced" if c.claimed else "contradicted"
    na, nb = len(c.sample.values[c.sample.a]), len(c.sample.values[c.sample.b])
    return f"inconclusive: no effect shown at n={na if na == nb else f'{na}/{nb}'} seeds"


def evaluate_claims(
    rows: Sequence[dict], *, methods: Sequence[str], steps: Sequence[int] = (20, 100),
    metric: str = "w2", verdicts: Mapping[str, float] | None = None,
    claims: Mapping[str, ClaimSpec] | None = None,
) -> list[ClaimResult]:
    """Judge each registered claim whose data this study has (in registry order)."""
    settings = {**VERDICT_DEFAULTS, **(verdicts or {})}
    ctx = ClaimContext(rows=rows, methods=list(methods), quality_metric=metric, steps=list(steps),
                       **settings)
    results: list[ClaimResult] = []
    for spec in (CLAIMS if claims is None else claims).values():
        key = spec.resolve_key(ctx)
        if key is None or any(m not in ctx.methods for m in spec.primary):
            continue
        gather = GATHER[spec.kind]
        primary = gather(spec, ctx, key=key, a=spec.primary[0], b=spec.primary[1])
        if primary is None:  # only claims whose data exist are shown
            continue
        samples = [s for a, b in spec.pairs[1:] if a in ctx.methods and b in ctx.methods
                   and (s := gather(spec, ctx, key=key, a=a, b=b))]
        a, b = spec.primary
        samples += [s for k in spec.supporting_keys if (s := gather(spec, ctx, key=k, a=a, b=b))]
        results.append(ClaimResult(
            spec, key, judge(primary, spec, role="primary"),
            [judge(s, spec, role="supporting") for s in samples],
            label=spec.label(ctx) if spec.label else ""))
    family = [r.primary for r in results
              if r.primary.test is not None and r.spec.extra.get("in_family", True)]
    for c, p in zip(family, holm([c.test.p for c in family]), strict=True):
        c.p_holm = p
        c.verdict = decide(c, p, alpha=ctx.alpha)
    for r in results:
        for c in (r.primary, *r.supporting):
            if not c.verdict and c.test is not None:  # supporting: its own unadjusted p
                c.verdict = decide(c, c.test.p, alpha=ctx.alpha)
    return results
