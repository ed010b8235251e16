"""Ladder records as the robustness code writes them (flatgen.ladder documents the record;
flatgen.records.LadderRecord types it): building one, its levels, and the robust level of a
single run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flatgen.ladder import first_crossing


def ladder_levels(levels: Sequence[float], name: str = "eps") -> list[float]:
    """The positive strengths of a ladder, sorted weakest first; 0 (the clean score, measured
    anyway) is dropped. A negative strength is a user error."""
    if any(v < 0 for v in levels):
        raise ValueError(f"{name} values must be >= 0, got {list(levels)}")
    out = sorted({float(v) for v in levels if v > 0})
    if not out:
        raise ValueError(f"give at least one {name} > 0")
    return out


def ladder_record(
    *,
    levels: Sequence[float],
    clean: float,
    values: Sequence[float],
    metric: str,
    level_name: str,
    extra: dict[str, Any],
    select: tuple[float, Sequence[float]] | None = None,
    per_sample: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """A LADDER RECORD (see flatgen.ladder); select = (select_clean, select_values) or None;
    per_sample: the score of each sample (or draw) at each level (levels x samples), where the
    values are means over them, else the key is left out."""
    record = {
        "levels": list(levels),
        "clean": float(clean),
        "values": [float(v) for v in values],
        "select_clean": None if select is None else float(select[0]),
        "select_values": None if select is None else [float(v) for v in select[1]],
        "metric": metric,
        "level_name": level_name,
        "extra": extra,
    }
    if per_sample is not None:
        record["per_sample"] = [[float(v) for v in row] for row in per_sample]
    return record


def robust_level(record: dict[str, Any], *, threshold: float) -> tuple[float, bool]:
    """(level, censored): where the record's score first exceeds the absolute `threshold`
    (flatgen.ladder.first_crossing, interpolated from the clean score). For one run; a claim
    fixes one threshold from the baseline and applies it to every model."""
    return first_crossing(
        record["levels"], record["values"], threshold, clean=record["clean"]
    )


def with_robust_level(record: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """record with extra["robust"] = {threshold, level, censored} when a threshold is given."""
    if threshold is not None:
        level, censored = robust_level(record, threshold=threshold)
        record["extra"]["robust"] = {"threshold": threshold, "level": level, "censored": censored}
    return record


def score_value(value: Any, metric: str) -> float:
    """A lower-is-better score from a quality result: a number, or a dict holding `metric`."""
    if isinstance(value, dict):
        if metric not in value:
            raise KeyError(f"metric {metric!r} not in quality results (have {', '.join(value)})")
        value = value[metric]
    return float(value)


def pgd_settings(
    *, norm: str, steps: int, restarts: int, step_factor: float, zero_first: bool
) -> dict[str, Any]:
    """The attack settings the batched diffusion attacks share."""
    return {"norm": norm, "steps": steps, "restarts": restarts, "step_factor": step_factor,
            "zero_first": zero_first}


def chunks(n: int, batch_size: int) -> list[slice]:
    """Consecutive row slices of at most batch_size rows."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
