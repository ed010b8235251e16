"""A study's plan: its units (training runs, listed by the study's kind) and one command each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flatgen.study.kind import Unit
from flatgen.study.kinds import kind_of


def plan_units(study: Any) -> list[Unit]:
    """The units of a study of any registered kind, in the order they run."""
    return kind_of(study).units(study)


def plan_commands(study_path: Path, study: Any, out: Path) -> list[str]:
    """One shell command per unit, for users who launch runs on their own scheduler."""
    return [f"flatgen study {study_path} --out {out} --only {u.name}" for u in plan_units(study)]


__all__ = ["Unit", "plan_commands", "plan_units"]
