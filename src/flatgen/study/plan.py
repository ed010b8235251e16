"""A study's plan: its units (one training run per base trajectory and seed) and where their
results go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flatgen.study.config import StudyConfig, split_method


@dataclass(frozen=True)
class Unit:
    """One training run of a study and the methods measured on it."""

    base: str
    seed: int
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.base}-s{self.seed}"


def plan_units(study: StudyConfig) -> list[Unit]:
    units = []
    for seed in study.seeds:
        bases: dict[str, list[str]] = {}
        for m in study.methods:
            bases.setdefault(split_method(m)[0], []).append(m)
        units += [Unit(base, seed, tuple(ms)) for base, ms in bases.items()]
    return units


def result_path(out: Path, unit: Unit, method: str) -> Path:
    return out / "runs" / unit.name / "eval" / f"study_{method}.json"


def plan_commands(study_path: Path, study: StudyConfig, out: Path) -> list[str]:
    """One shell command per unit, for users who launch runs on their own scheduler."""
    return [f"flatgen study {study_path} --out {out} --only {u.name}" for u in plan_units(study)]
