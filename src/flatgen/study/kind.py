"""What a study kind is: the hooks the one study engine (study/run.py, study/plan.py) calls.

A study is methods x seeds; its units are the training runs. The engine owns the rules every
kind shares: the directory layout runs/<unit>/, skipping a unit whose results were measured
with the current evaluation settings, refusing a run directory trained with another config,
recording a failed unit (error.log) while the others go on, status.json, --plan and --only.
A kind says only what differs: its config, its units, how a unit is trained and measured,
and where a method's result lives. Kinds are listed in study/kinds.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Unit:
    """One training run of a study and the methods measured on it."""

    base: str
    seed: int
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.base}-s{self.seed}"


# train_unit(study, out, unit, *, console, progress): train runs/<unit.name>, resume it, or
# leave it as it is when its training is finished
TrainUnit = Callable[..., None]
# measure(study, out, unit, *, method, progress) -> the method's result record (JSON-able,
# with at least "method" and "seed"); the engine adds "evaluations" and writes it
Measure = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class StudyKind:
    """One kind of study. Every hook takes the kind's own validated config (`study`)."""

    name: str  # the study YAML's `task`
    config: type  # the pydantic model of the study config
    load: Callable[[Path], Any]  # the validated config from a YAML file (ConfigError if bad)
    units: Callable[[Any], list[Unit]]
    # the training config of a unit (JSON-able), and the one saved in a run directory (or None):
    # a run directory whose saved config differs is refused, never reused or resumed
    run_config: Callable[[Any, Unit], dict[str, Any]]
    saved_run_config: Callable[[Path], dict[str, Any] | None]
    # the measurement settings stored beside each result: a result measured with others is
    # measured again (without retraining)
    evaluations: Callable[[Any], dict[str, Any]]
    result_path: Callable[[Path, Unit, str], Path]  # (out, unit, method) -> its result JSON
    train_unit: TrainUnit
    measure: Measure
