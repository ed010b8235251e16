"""Stress ladders: a perturbation applied at increasing strength, and the score at each level.

A ladder record (one model, one seed) is a plain dict, written by the robustness suites and read
by the claims:

    {"levels": [...],          # strengths, weakest first (T' from many to few steps, bits from
                               # many to few, eps or sigma from small to large)
     "clean": float,           # the score without the perturbation (lower is better)
     "values": [...],          # the score at each level (None where not measured)
     "select_clean": float | None, "select_values": [...] | None,
                               # the same on separate sampling noise: the level a claim is judged
                               # at is chosen on these, so the choice does not select on the outcome
     "metric": str, "level_name": str, "extra": {...}}

Scores are "lower is better" (a loss, an FID). The functions here are the two decisions made on a
ladder: where the baseline first degrades, and where a score first crosses a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def degraded_level(
    levels: Sequence[float], values: Sequence[float | None], clean: float, *, margin: float
) -> int | None:
    """Index of the first level whose score is worse than clean by more than `margin` (0.25: 25%
    worse), or None where no level degrades. Scores are lower-is-better and clean > 0."""
    if len(levels) != len(values):
        raise ValueError(f"{len(levels)} levels but {len(values)} values")
    limit = clean * (1 + margin)
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v) and v > limit:
            return i
    return None


def first_crossing(
    levels: Sequence[float], values: Sequence[float | None], threshold: float, *,
    clean: float | None = None,
) -> tuple[float, bool]:
    """The strength at which the score first exceeds `threshold`, and whether it is censored.

    Between the last level at or below the threshold and the first above it the crossing is
    linearly interpolated (from 0 strength with score `clean` when the first level already
    crosses and clean is given). Never crossing within the ladder returns (largest level, True):
    a lower bound, not a number.
    """
    if len(levels) != len(values) or not levels:
        raise ValueError(f"need as many values as levels, got {len(levels)} and {len(values)}")
    prev_level, prev_value = (0.0, clean) if clean is not None else (None, None)
    for level, value in zip(levels, values, strict=True):
        if value is None or not math.isfinite(value):
            continue
        if value > threshold:
            if prev_value is None or prev_level is None or prev_value >= threshold:
                return float(level), False
            frac = (threshold - prev_value) / (value - prev_value)
            return float(prev_level + frac * (level - prev_level)), False
        prev_level, prev_value = level, value
    return float(levels[-1]), True
