"""The study runner: train each (base trajectory, seed) once, measure every method, collect.

Layout of a study directory:
  runs/<base>-s<seed>/            a normal flatgen run directory (train, sample, evaluate work on it)
  runs/<base>-s<seed>/eval/study_<method>.json   the flat measurements of one method
  results.csv, results.json, table.md, plots/, report.html   written by collect_study

Finished units are skipped on restart; a failing unit is recorded and the others go on.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from flatgen.config import Config, config_changes, load_config
from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.study.config import StudyConfig, split_method, unit_config
from flatgen.study.plan import Unit, plan_units, result_path
from flatgen.train import RunDirError, load_run, train
from flatgen.train.checkpoint import find_checkpoint


def _measured_with(path: Path, study: StudyConfig) -> bool:
    """Whether a result file exists and was measured with the study's current evaluations."""
    if not path.is_file():
        return False
    saved = json.loads(path.read_text()).get("evaluations")
    return saved is None or saved == study.evaluations.model_dump(mode="json")


def unit_done(out: Path, unit: Unit, study: StudyConfig) -> bool:
    """Every method measured with the current evaluations (check_run_config vouches for the run)."""
    return all(_measured_with(result_path(out, unit, m), study) for m in unit.methods)


def check_run_config(run_dir: Path, cfg: Config) -> None:
    """Refuse to reuse or resume a run trained with another config (say a --quick demo)."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    diff = [f"{key}: {a!r} -> {b!r}" for key, a, b in
            config_changes(load_config(saved).model_dump(mode="json"), cfg.model_dump(mode="json"))]
    if diff:
        shown = "; ".join(diff[:3]) + (f" (+{len(diff) - 3} more)" if len(diff) > 3 else "")
        raise RunDirError(f"{str(run_dir)!r} was trained with a different config ({shown}): "
                          "delete it or choose another --out")


def run_unit(study: StudyConfig, out: Path, unit: Unit, console: Console, progress: bool = True) -> None:
    """Train (or resume, or reuse) the unit's run, then measure each of its methods."""
    from flatgen.study.measure import measure_method

    run_dir = out / "runs" / unit.name
    cfg = unit_config(study, unit.base, unit.seed)
    summary = run_dir / "train_summary.json"
    finished = summary.is_file() and not json.loads(summary.read_text()).get("interrupted")
    if not finished:
        resume = find_checkpoint(run_dir / "checkpoints" / "last") is not None
        averages = [a for a in ("ema", "swa") if getattr(cfg.method, a) is not None]
        tracking = f", tracking {' and '.join(a.upper() for a in averages)}" if averages else ""
        console.print(f"[bold]{unit.name}[/bold]: training {unit.base} ({cfg.train.steps} steps{tracking})")
        train(cfg, run_dir, resume=resume, progress=progress)
    run = load_run(run_dir)
    for method in unit.methods:
        path = result_path(out, unit, method)
        if _measured_with(path, study):
            continue
        weights = split_method(method)[1]
        console.print(f"[bold]{unit.name}[/bold]: measuring {method} ({weights} weights)")
        t0 = time.perf_counter()
        metrics = measure_method(run, weights, study.evaluations, method=method, progress=progress)
        write_json_atomic(path, {
            "method": method, "seed": unit.seed, "base": unit.base, "weights": weights,
            "seconds": round(time.perf_counter() - t0, 1), "metrics": metrics,
            "evaluations": study.evaluations.model_dump(mode="json"),
        })


def run_study(
    study: StudyConfig, out: Path, console: Console, only: str | None = None, progress: bool = True
) -> dict[str, str]:
    """Run every unit not yet done (or just `only`); returns unit name -> 'done'|'skipped'|error."""
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    units = plan_units(study)
    if only is not None:
        units = [u for u in units if u.name == only]
        if not units:
            names = ", ".join(u.name for u in plan_units(study))
            raise ValueError(f"no unit {only!r} in this study; units: {names}")
    for i, unit in enumerate(units, 1):
        try:
            # a run trained for another config is refused before it is skipped, resumed or measured
            check_run_config(out / "runs" / unit.name, unit_config(study, unit.base, unit.seed))
            if unit_done(out, unit, study):
                status[unit.name] = "skipped (done)"
                continue
            console.rule(f"[{i}/{len(units)}] {unit.name}: {', '.join(unit.methods)}")
            run_unit(study, out, unit, console, progress)
            status[unit.name] = "done"
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


def load_results(out: Path, study: StudyConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """All measured (method, seed) results, and the names of the missing ones."""
    rows, missing = [], []
    for unit in plan_units(study):
        try:
            check_run_config(out / "runs" / unit.name, unit_config(study, unit.base, unit.seed))
        except RunDirError:  # trained for another study config: its numbers do not belong here
            missing += [f"{m} seed {unit.seed} (run trained with another config)" for m in unit.methods]
            continue
        for method in unit.methods:
            path = result_path(out, unit, method)
            if _measured_with(path, study):
                rows.append(json.loads(path.read_text()))
            else:
                missing.append(f"{method} seed {unit.seed}")
    return rows, missing


def torch_threads_note() -> str:
    return f"{torch.get_num_threads()} torch threads"
