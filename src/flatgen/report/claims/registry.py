"""The claims registry: one ClaimSpec per claim, registered by id; evaluate_claims iterates it.

Adding a claim is one new module in report/claims/ that calls `register(ClaimSpec(...))`, its
import in report/claims/__init__.py, and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flatgen.records import MethodResult
from flatgen.registry import Registry
from flatgen.report.claims.verdicts import Verdicts

Kind = Literal["scalar", "degradation", "threshold"]
Pair = tuple[str, str]
# a metric key fixed in the spec, or chosen from the study's rows (e.g. the largest radius)
KeyFn = Callable[["ClaimContext"], str | None]


@dataclass(frozen=True)
class SourceEffect:
    """The effect the source reports, as a relative effect this study can compare.

    scale "relative": a change of the baseline's statistic by this fraction (-0.74: a 74% cut),
    so the effect in this study's units is value x the baseline's mean here; "ratio": the robust
    level's ratio method / baseline (7: "attacks about 7x stronger"). degradation: how much the
    source's baseline degraded where the claim was measured (34.47 / 8.80 = 3.9x), which picks
    the matching level when the config does not fix one. stated: False for a smallest effect of
    interest that the study config (not the source) states.
    """

    value: float
    scale: Literal["relative", "ratio"]
    text: str
    degradation: float | None = None
    stated: bool = True


@dataclass(frozen=True)
class ClaimContext:
    """What a claim may look at besides its spec: the results and the verdict settings."""

    rows: Sequence[MethodResult]
    methods: Sequence[str]
    quality_metric: str
    steps: Sequence[int]
    verdicts: Verdicts = field(default_factory=Verdicts)


@dataclass(frozen=True)
class ClaimSpec:
    """One published claim and how this study judges it.

    kind: "scalar" compares a flat metric key per seed; "degradation" judges a ladder at a level
    fixed before the run (verdicts.levels, else `default_level`, else the level whose baseline
    degradation is closest to the source's); "threshold" compares the level where each model's
    score first rises above its own clean score by m x the baseline's clean (or by `threshold`,
    an absolute rise, for scores whose clean value is 0).
    key: the metric key (scalar) or ladder id; a function of the context where the key depends on
    what was measured. direction: the method's statistic should be "lower" or "higher" than the
    baseline's. statistic: "value" (scalar, or the ladder's score at the judged level), "rise"
    (score at the judged level minus clean), "robust level" (threshold).
    pairs: (method, baseline), the primary comparison first (the one in the family); the rest
    are supporting. supporting_keys: the same comparison on other keys/ladders, shown beside.
    source_effect: the source's effect (or a smallest effect of interest) the interval is
    compared with. decides: one line saying what decides the verdict. label: extra words from
    the rows (e.g. which ascent found the worst case). in_family: False for supporting claims.
    """

    id: str
    text: str
    source: str
    kind: Kind
    key: str | KeyFn
    direction: Literal["lower", "higher"]
    statistic: Literal["value", "rise", "robust level"] = "value"
    pairs: tuple[Pair, ...] = (("sam", "adm"), ("sam+ema", "ema"), ("sam+swa", "swa"))
    supporting_keys: tuple[str, ...] = ()
    decides: str = ""
    title: str = ""  # the claim as a short sentence, for the verdict table
    level_format: str = "{level:g}"  # how the judged level reads in the verdict table
    level_name: str = "level"  # what a ladder's levels are ("T'", "bits"), for the ranges shown
    default_level: float | None = None
    level_setting: str | None = None  # the robustness setting a ladder's levels come from
    threshold: float | None = None
    source_effect: SourceEffect | None = None
    in_family: bool = True
    label: Callable[[ClaimContext], str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve_key(self, ctx: ClaimContext) -> str | None:
        return self.key(ctx) if callable(self.key) else self.key

    @property
    def primary(self) -> Pair:
        return self.pairs[0]

    def effect_of_interest(self, verdicts: Verdicts) -> SourceEffect | None:
        """The source's effect, or the config's smallest effect of interest in its place."""
        given = verdicts.smallest_effects.get(self.id)
        if given is None:
            return self.source_effect
        scale = "ratio" if self.kind == "threshold" else "relative"
        return SourceEffect(float(given), scale, "smallest effect of interest (study config)",
                            stated=False)


def _check(spec: ClaimSpec) -> None:
    if spec.kind == "threshold" and spec.statistic != "robust level":
        raise ValueError(f"claim {spec.id!r}: a threshold claim's statistic is 'robust level'")


CLAIMS: Registry[ClaimSpec] = Registry("claim", check=_check)


def register(spec: ClaimSpec) -> ClaimSpec:
    """Add a claim to the registry; ids are unique."""
    if spec.id in CLAIMS:
        raise ValueError(f"claim id {spec.id!r} is registered twice; give the new claim its own id")
    return CLAIMS.register(spec.id, spec)
