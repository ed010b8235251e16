"""The claims registry: one ClaimSpec per claim, registered by id; evaluate_claims iterates it.

Adding a claim is one new module in report/claims/ that calls `register(ClaimSpec(...))`, its
import in report/claims/__init__.py, and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["scalar", "degradation", "threshold"]
Pair = tuple[str, str]
# a metric key fixed in the spec, or chosen from the study's rows (e.g. the largest radius)
KeyFn = Callable[["ClaimContext"], str | None]


@dataclass(frozen=True)
class ClaimContext:
    """What a claim may look at besides its spec: the rows and the study's settings."""

    rows: Sequence[dict]
    methods: Sequence[str]
    quality_metric: str
    steps: Sequence[int]
    margin: float = 0.25
    threshold_margin: float = 0.5
    alpha: float = 0.05


@dataclass(frozen=True)
class ClaimSpec:
    """One published claim and how this study judges it.

    kind: "scalar" compares a flat metric key per seed; "degradation" judges a ladder at the first
    level where the baseline degrades by `margin`; "threshold" compares the level where each
    model's score crosses ONE threshold fixed from the baseline's clean score.
    key: the metric key (scalar) or LADDER_ID (ladders); a function of the context where the key
    depends on what was measured. direction: the method's statistic should be "lower" or
    "higher" than the baseline's. statistic: "value" (scalar, or the ladder's score at the judged
    level), "rise" (score at the judged level minus clean), "robust level" (threshold).
    pairs: (method, baseline), the primary comparison first (the one in the Holm family); the
    rest are supporting. supporting_keys: the same comparison on other keys/ladders, shown
    beside (e.g. DDIM beside ADM). decides: one line saying what decides the verdict.
    label: extra words for the claim, from the rows (e.g. which ascent found the worst case).
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
    level_format: str = "{level:g}"  # how the judged level reads in the verdict table
    level_name: str = "level"  # what a ladder's levels are ("T'", "bits"), for the ranges shown
    label: Callable[[ClaimContext], str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve_key(self, ctx: ClaimContext) -> str | None:
        return self.key(ctx) if callable(self.key) else self.key

    @property
    def primary(self) -> Pair:
        return self.pairs[0]


CLAIMS: dict[str, ClaimSpec] = {}


def register(spec: ClaimSpec) -> ClaimSpec:
    """Add a claim to the registry; ids are unique."""
    if spec.id in CLAIMS:
        raise ValueError(f"claim id {spec.id!r} is registered twice; give the new claim its own id")
    if spec.kind == "threshold" and spec.statistic != "robust level":
        raise ValueError(f"claim {spec.id!r}: a threshold claim's statistic is 'robust level'")
    CLAIMS[spec.id] = spec
    return spec
