"""The study engine, for every kind of study (study/kinds.py): train each unit once, measure
every method, skip what is done, refuse what was trained for another config.

Layout of a study directory:
  runs/<unit>/                 the unit's run directory (its kind decides what is inside)
  runs/<unit>/error.log        the traceback of a failed unit (retried on restart)
  status.json                  unit -> 'done' | 'skipped (done)' | 'failed: ...'
  results.csv, results.json, table.md, plots ...   written by study.collect

A unit is done when every method's result was measured with the study's current evaluation
settings (a result measured with others is measured again, without retraining). A run
directory trained with another config is refused, never reused or resumed. A failing unit is
recorded and the others go on.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from flatgen.config import config_changes
from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.study.kind import StudyKind, Unit
from flatgen.study.kinds import kind_of
from flatgen.study.plan import plan_units
from flatgen.train import RunDirError


def measured_with(path: Path, evaluations: dict[str, Any]) -> bool:
    """Whether a result file exists and was measured with these evaluation settings (a result
    that predates the stored settings counts as measured with them)."""
    if not path.is_file():
        return False
    saved = json.loads(path.read_text()).get("evaluations")
    return saved is None or saved == evaluations


def unit_done(out: Path, unit: Unit, study: Any) -> bool:
    """Every method measured with the current evaluations (check_run_config vouches for the run)."""
    kind = kind_of(study)
    evaluations = kind.evaluations(study)
    return all(measured_with(kind.result_path(out, unit, m), evaluations) for m in unit.methods)


def check_run_config(run_dir: Path, study: Any, unit: Unit) -> None:
    """Refuse to reuse or resume a run trained with another config (say a --quick demo)."""
    kind = kind_of(study)
    saved = kind.saved_run_config(run_dir)
    if saved is None:
        return
    diff = [f"{key}: {a!r} -> {b!r}"
            for key, a, b in config_changes(saved, kind.run_config(study, unit))]
    if diff:
        shown = "; ".join(diff[:3]) + (f" (+{len(diff) - 3} more)" if len(diff) > 3 else "")
        raise RunDirError(f"{str(run_dir)!r} was trained with a different config ({shown}): "
                          "delete it or choose another --out")


def run_unit(
    study: Any, out: Path, unit: Unit, *, console: Console, progress: bool = True
) -> None:
    """Train (or resume, or reuse) the unit's run, then measure each method not yet measured
    with the current evaluations."""
    kind: StudyKind = kind_of(study)
    evaluations = kind.evaluations(study)
    todo = [m for m in unit.methods
            if not measured_with(kind.result_path(out, unit, m), evaluations)]
    kind.train_unit(study, out, unit, console=console, progress=progress)
    for method in todo:
        console.print(f"[bold]{unit.name}[/bold]: measuring {method}")
        record = kind.measure(study, out, unit, method=method, progress=progress)
        write_json_atomic(kind.result_path(out, unit, method),
                          {**record, "evaluations": evaluations})


def _select(study: Any, only: str | None) -> list[Unit]:
    units = plan_units(study)
    if only is None:
        return units
    chosen = [u for u in units if u.name == only]
    if not chosen:
        names = ", ".join(u.name for u in units)
        raise ValueError(f"no unit {only!r} in this study; units: {names}")
    return chosen


def run_study(
    study: Any, out: Path, console: Console, *, only: str | None = None, progress: bool = True
) -> dict[str, str]:
    """Run every unit not yet done (or just `only`); returns unit name -> 'done'|'skipped'|error."""
    units = _select(study, only)
    if (out / "config.yaml").is_file() or (out / "checkpoints").is_dir():
        raise RunDirError(f"{str(out)!r} is a training run directory: give the study its own "
                          "--out (a new or study folder)")
    out.mkdir(parents=True, exist_ok=True)
    # a run trained for another config is a malformed study (exit 2), refused before any unit
    # runs and before status.json changes: it must not mark the good runs failed
    for unit in units:
        check_run_config(out / "runs" / unit.name, study, unit)
    status = _previous_status(out, study)  # --only updates its own entry
    for i, unit in enumerate(units, 1):
        try:
            if unit_done(out, unit, study):
                status[unit.name] = "skipped (done)"
                continue
            console.rule(f"[{i}/{len(units)}] {unit.name}: {', '.join(unit.methods)}")
            run_unit(study, out, unit, console=console, progress=progress)
            status[unit.name] = "done"
            (out / "runs" / unit.name / "error.log").unlink(missing_ok=True)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - one failed run must not sink the study
            status[unit.name] = f"failed: {type(err).__name__}: {err}"
            log = out / "runs" / unit.name / "error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(log, traceback.format_exc())
            console.print(f"[red]{unit.name} failed[/red]: {err} (traceback in {log})")
    write_json_atomic(out / "status.json", status)
    return status


def _previous_status(out: Path, study: Any) -> dict[str, str]:
    """status.json's entries for the units this study still has."""
    saved = out / "status.json"
    previous = json.loads(saved.read_text()) if saved.is_file() else {}
    planned = {u.name for u in plan_units(study)}
    return {k: v for k, v in (previous if isinstance(previous, dict) else {}).items()
            if k in planned}


def load_results(out: Path, study: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """All measured (method, seed) results, and the names of the missing ones."""
    kind = kind_of(study)
    evaluations = kind.evaluations(study)
    rows, missing = [], []
    for unit in plan_units(study):
        try:
            check_run_config(out / "runs" / unit.name, study, unit)
        except RunDirError:  # trained for another study config: its numbers do not belong here
            missing += [f"{m} seed {unit.seed} (run trained with another config)"
                        for m in unit.methods]
            continue
        for method in unit.methods:
            path = kind.result_path(out, unit, method)
            if measured_with(path, evaluations):
                rows.append(json.loads(path.read_text()))
            else:
                missing.append(f"{method} seed {unit.seed}")
    return rows, missing


def torch_threads_note() -> str:
    return f"{torch.get_num_threads()} torch threads"


def load_finished(out: Path, study: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """load_results, refusing (ValueError, one line) a study with nothing to collect, and saying
    why when its runs were trained with another config."""
    rows, missing = load_results(out, study)
    if not rows:
        other = [m for m in missing if "another config" in m]
        if other:  # say why, not just that nothing is there
            raise ValueError(f"the runs in {str(out)!r} were trained with another config "
                             f"({other[0]}, ...): collect with that config, or choose "
                             "another --out")
        raise ValueError(f"no finished runs in {str(out)!r}: run `flatgen study` first")
    return rows, missing


__all__ = [
    "check_run_config", "load_finished", "load_results", "run_study", "run_unit", "unit_done",
]
