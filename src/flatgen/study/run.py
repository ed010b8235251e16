"""The study engine, for every kind of study (study/kinds.py): train each unit once, measure
every method, skip what is done, refuse what was trained for another config.

Layout of a study directory:
  runs/<unit>/                 the unit's run directory (its kind decides what is inside)
  runs/<unit>/error.log        the traceback of a failed unit (retried on restart)
  status.json                  unit -> 'done' | 'skipped (done)' | 'failed: ...'
  results.csv, results.json, table.md, plots ...   written by study.collect

Executors (study/executors.py): run_units runs the units inline (one process), as parallel
one-thread local processes (the default on a CPU machine with more than one unit to run), or as
Slurm jobs. Every unit runs at one torch thread unless inline was asked for, so a unit's numbers
do not depend on how it was run nor on how many units ran beside it.

A unit is done when every method's result was measured with the study's current evaluation
settings (a result measured with others is measured again, without retraining). A run
directory trained with another config is refused, never reused or resumed. A failing unit is
recorded and the others go on.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from flatgen.config import config_changes
from flatgen.io import read_json_object, write_json_atomic, write_text_atomic
from flatgen.study.executors import check_executor, make_executor, run_local, submit_slurm
from flatgen.study.kind import StudyKind, Unit
from flatgen.study.kinds import kind_of
from flatgen.study.plan import plan_units
from flatgen.train import RunDirError


def measured_with(path: Path, evaluations: dict[str, Any]) -> bool:
    """Whether a result file exists and was measured with these evaluation settings (a result
    that predates the stored settings counts as measured with them)."""
    if not path.is_file():
        return False
    saved = read_json_object(path, "results file", infinities=True).get("evaluations")
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
    if not _main_rank():  # under torchrun every rank trains (DDP); rank 0 alone measures
        return
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
    prepare_study_dir(study, out, units)
    out.mkdir(parents=True, exist_ok=True)
    status = _previous_status(out, study)  # --only updates its own entry
    spent: list[float] = []  # seconds of each unit run here: the time left is their mean
    for i, unit in enumerate(units, 1):
        try:
            if unit_done(out, unit, study):
                status[unit.name] = "skipped (done)"
                continue
            left = (f"; about {_minutes(sum(spent) / len(spent) * (len(units) - i + 1))} left"
                    if spent else "")
            console.rule(f"[{i}/{len(units)}] {unit.name}: {', '.join(unit.methods)}{left}")
            t0 = time.perf_counter()
            run_unit(study, out, unit, console=console, progress=progress)
            spent.append(time.perf_counter() - t0)
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
    if _main_rank():
        write_json_atomic(out / "status.json", status)
    return status


def prepare_study_dir(study: Any, out: Path, units: list[Unit]) -> None:
    """Refuse a training run directory as --out, and any unit's run trained for another config
    (a malformed study: exit 2, before any unit runs and before status.json changes, so that it
    cannot mark the good runs failed). Writes nothing."""
    if (out / "config.yaml").is_file() or (out / "checkpoints").is_dir():
        raise RunDirError(f"{str(out)!r} is a training run directory: give the study its own "
                          "--out (a new or study folder)")
    for unit in units:
        check_run_config(out / "runs" / unit.name, study, unit)


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def default_jobs() -> int:
    """The cores this process may use (the CPU affinity where the OS says, else the count)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def resolve_executor(executor: str | None, n_todo: int) -> str:
    """None ('auto'): parallel local processes on a CPU machine with more than one unit to run,
    else inline (a GPU machine runs its units one after the other in one process)."""
    if executor is not None:
        check_executor(executor)
        return executor
    return "local" if n_todo > 1 and not torch.cuda.is_available() else "inline"


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to n (None: unchanged) for the block."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def snapshot_config(study: Any, out: Path) -> Path:
    """OUT/study.yaml: the study config (the fields set, as given) that local and Slurm jobs load
    when the study came from no file (flatgen demo). Loading it gives back the same config."""
    path = Path(out) / "study.yaml"
    data = study.model_dump(mode="json", exclude_unset=True)
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return path


def run_units(
    study: Any,
    out: Path,
    *,
    executor: str | None = None,
    jobs: int | None = None,
    config: Path | None = None,
    console: Console,
    only: str | None = None,
    progress: bool = True,
    estimates: dict[str, float] | None = None,
) -> dict[str, str]:
    """Run the study's units not yet done (or just `only`) with an executor; returns unit name
    -> 'done' | 'skipped (done)' | 'failed: ...' | 'submitted: Slurm job N'.

    executor None picks one (resolve_executor); jobs None: one process per core. config: the
    study YAML the jobs load (default: OUT/study.yaml, written from `study`). estimates (unit
    -> predicted seconds, plan.unit_costs) order the local jobs longest first and give the
    progress lines their time left. The report is not built here: collect once after this."""
    units = _select(study, only)
    prepare_study_dir(study, out, units)
    todo = [u for u in units if not unit_done(out, u, study)]
    kind = resolve_executor(executor, len(todo))  # a bad --executor: refused, nothing written
    if kind == "slurm":
        make_executor("slurm", out / "submitit")  # off a cluster: refused, nothing written
    if kind == "inline":  # auto on a CPU machine: one thread, as the local jobs would have
        auto_cpu = executor is None and not torch.cuda.is_available()
        with torch_threads(1 if auto_cpu else None):
            return run_study(study, out, console, only=only, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    config = Path(config) if config is not None else snapshot_config(study, out)
    if kind == "slurm":
        ids = submit_slurm(config, out, [u.name for u in todo],
                           settings=getattr(study, "slurm", None))
        return {unit: f"submitted: Slurm job {job}" for unit, job in ids.items()}
    status = _previous_status(out, study)
    status |= {u.name: "skipped (done)" for u in units if u not in todo}
    estimates = estimates or {}
    names = sorted((u.name for u in todo), key=lambda n: -estimates.get(n, 0.0))
    parallel = max(1, min(jobs or default_jobs(), len(todo)))
    console.print(f"running {len(todo)} unit(s) as local processes, {parallel} at a time, "
                  f"one torch thread each (logs in {out / 'logs'})")
    tracker = _Tracker(names, parallel, estimates, console)
    finished = run_local(config, out, names, parallel=parallel, on_done=tracker)
    for unit in todo:  # a job that exited 0 without its results is a failure too
        state = finished[unit.name]
        if state == "done" and not unit_done(out, unit, study):
            state = f"failed: no results written (log: {out / 'logs' / f'{unit.name}.log'})"
        status[unit.name] = state
    write_json_atomic(out / "status.json", status)
    return {u.name: status[u.name] for u in units}


class _Tracker:
    """One line per finished unit: units done, its time, and the time left (the estimates
    scaled by the time the finished units took, over the processes still busy)."""

    def __init__(self, names: list[str], parallel: int, estimates: dict[str, float],
                 console: Console) -> None:
        self.left = {n: estimates.get(n) or 1.0 for n in names}
        self.parallel, self.console, self.t0 = parallel, console, time.perf_counter()
        self.total, self.spent, self.predicted = len(names), 0.0, 0.0

    def __call__(self, unit: str, state: str, seconds: float) -> None:
        self.predicted += self.left.pop(unit)
        self.spent += seconds
        left = sum(self.left.values()) * self.spent / self.predicted
        left /= max(1, min(self.parallel, len(self.left)))
        done = self.total - len(self.left)
        eta = f"; about {_minutes(left)} left" if self.left else ""
        colour = "green" if state == "done" else "red"
        self.console.print(f"[{done}/{self.total}] {unit}: [{colour}]{state}[/{colour}] "
                           f"in {_minutes(seconds)}{eta}", highlight=False)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


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
                rows.append(read_json_object(path, "results file", infinities=True))
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
    "check_run_config", "default_jobs", "load_finished", "load_results", "prepare_study_dir",
    "resolve_executor", "run_study", "run_unit", "run_units", "snapshot_config", "unit_done",
]
