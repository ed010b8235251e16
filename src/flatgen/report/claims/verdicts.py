"""How the claims decide: the one definition of the `verdicts` section of a study config.

The study config imports this model; the claims read it typed. Every level a claim is judged
at and every size it is judged against is fixed here, before anything runs.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from flatgen.config import Section


class Sequential(Section):
    """`flatgen study --until-decided`: seeds in batches, a look after each (O'Brien-Fleming
    alpha-spending over the planned looks, so that looking again does not inflate alpha)."""

    batch: int = Field(5, ge=2)  # seeds added per look (the first look needs 2 for a test)
    max_seeds: int = Field(20, ge=2)  # the last planned look


class Verdicts(Section):
    """margin: a baseline counts as degraded when 25% worse than clean (the first-degraded level,
    reported beside the pre-registered one, and the testability check);
    threshold_margin: m of the threshold claims, judged on the *rise* over each model's own clean
    score: a model's robust level is where score - own clean first exceeds m x the baseline's
    clean score (one m for every model); threshold_margins_shown: the m's whose robust-level
    ratios the report shows beside it, so a reader sees whether the ratio hinges on m;
    alpha: the family-wise level (Holm with Shaffer's constraint across the primary claims);
    levels: claim id -> the ladder level it is judged at, fixed before the run (default: the
    claim's own default, matched to the source's regime);
    smallest_effects: claim id -> the smallest effect of interest where the source gives no number
    (a relative change of the baseline's statistic, or a ratio for robust levels); it overrides
    the claim's default. The claim ids are checked against the registry by the study config."""

    margin: float = Field(0.25, gt=0)
    threshold_margin: float = Field(0.5, gt=0)
    threshold_margins_shown: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0])
    alpha: float = Field(0.05, gt=0, lt=1)
    levels: dict[str, float] = Field(default_factory=dict)
    smallest_effects: dict[str, float] = Field(default_factory=dict)
    sequential: Sequential = Field(default_factory=Sequential)

    @field_validator("threshold_margins_shown")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(m <= 0 for m in v):
            raise ValueError("threshold_margins_shown needs positive margins")
        return sorted(set(v))
