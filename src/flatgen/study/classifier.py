"""The classifier study kind (task: classifier): one unit per (method, seed), trained and
measured by flatgen.classify.study; runs/<method>-s<seed>/ is laid out as described there."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from flatgen.classify.config import ClassifierStudyConfig, DataSpec, _Method
from flatgen.config import ConfigError, format_validation_error, read_yaml_mapping
from flatgen.io import write_json_atomic
from flatgen.study.kind import StudyKind, Unit

RUN_CONFIG = "config.json"


def load_classifier_study(path: Path) -> ClassifierStudyConfig:
    data = read_yaml_mapping(path, "study config")
    try:
        return ClassifierStudyConfig.model_validate(data)
    except ValidationError as err:
        text = format_validation_error(err)
        raise ConfigError(text.replace("invalid config", "invalid study config")) from None


def _units(study: ClassifierStudyConfig) -> list[Unit]:
    return [Unit(m.label, seed, (m.label,)) for seed in study.seeds for m in study.methods]


def _method(study: ClassifierStudyConfig, unit: Unit) -> _Method:
    return next(m for m in study.methods if m.label == unit.base)


def _run_config(study: ClassifierStudyConfig, unit: Unit) -> dict[str, Any]:
    dump = study.model_dump(mode="json", include={"data", "model", "train"})
    return {**dump, "method": _method(study, unit).model_dump(mode="json"), "seed": unit.seed}


def _saved_run_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RUN_CONFIG
    return json.loads(path.read_text()) if path.is_file() else None


def _evaluations(study: ClassifierStudyConfig) -> dict[str, Any]:
    return study.model_dump(mode="json", include={"attacks", "sharpness"})


def _result_path(out: Path, unit: Unit, method: str) -> Path:
    return out / "runs" / unit.name / "result.json"


@lru_cache(maxsize=1)
def _cached_data(spec_json: str):
    from flatgen.classify.data import load_classifier_data

    return load_classifier_data(DataSpec.model_validate_json(spec_json))


def _data(study: ClassifierStudyConfig):
    return _cached_data(study.data.model_dump_json())


def train_unit(
    study: ClassifierStudyConfig, out: Path, unit: Unit, *, console: Console,
    progress: bool = True,
) -> None:
    """Train the unit's classifier unless its run directory holds a trained one."""
    from flatgen.classify.study import is_trained, run_bar, torch_threads, train_run

    run_dir = out / "runs" / unit.name
    if is_trained(run_dir):
        return
    method = _method(study, unit)
    console.print(f"[bold]{unit.name}[/bold]: training {method.label} "
                  f"({study.train.steps} steps)")
    write_json_atomic(run_dir / RUN_CONFIG, _run_config(study, unit))
    with torch_threads(study.threads), run_bar(unit.name, progress=progress) as bar:
        train_run(study, method, unit.seed, data=_data(study), run_dir=run_dir, bar=bar)


def measure(
    study: ClassifierStudyConfig, out: Path, unit: Unit, *, method: str, progress: bool = True
) -> dict[str, Any]:
    from flatgen.classify.study import measure_run, run_bar, torch_threads

    with torch_threads(study.threads), run_bar(unit.name, progress=progress) as bar:
        return measure_run(study, _method(study, unit), unit.seed, data=_data(study),
                           run_dir=out / "runs" / unit.name, bar=bar)


CLASSIFIER = StudyKind(
    name="classifier",
    config=ClassifierStudyConfig,
    load=load_classifier_study,
    units=_units,
    run_config=_run_config,
    saved_run_config=_saved_run_config,
    evaluations=_evaluations,
    result_path=_result_path,
    train_unit=train_unit,
    measure=measure,
)
