"""The diffusion study kind: base trajectories x seeds trained by flatgen.train, each method
(raw, EMA or SWA weights of a trajectory) measured by study/measure.py.

  runs/<base>-s<seed>/                            a normal flatgen run directory
  runs/<base>-s<seed>/eval/study_<method>.json    the flat measurements of one method
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from flatgen.config import load_config
from flatgen.study.config import StudyConfig, load_study_config, split_method, unit_config
from flatgen.study.kind import StudyKind, Unit
from flatgen.train import load_run, train
from flatgen.train.rundir import run_lock


def plan_diffusion_units(study: StudyConfig) -> list[Unit]:
    """One unit per base trajectory and seed; 'sam', 'sam+ema' and 'sam+swa' share one."""
    units = []
    for seed in study.seeds:
        bases: dict[str, list[str]] = {}
        for m in study.methods:
            bases.setdefault(split_method(m)[0], []).append(m)
        units += [Unit(base, seed, tuple(ms)) for base, ms in bases.items()]
    return units


def result_path(out: Path, unit: Unit, method: str) -> Path:
    return out / "runs" / unit.name / "eval" / f"study_{method}.json"


def _run_config(study: StudyConfig, unit: Unit) -> dict[str, Any]:
    return unit_config(study, unit.base, unit.seed).model_dump(mode="json")


def _saved_run_config(run_dir: Path) -> dict[str, Any] | None:
    saved = run_dir / "config.yaml"
    return load_config(saved).model_dump(mode="json") if saved.is_file() else None


def _evaluations(study: StudyConfig) -> dict[str, Any]:
    return study.evaluations.model_dump(mode="json")


def train_unit(
    study: StudyConfig, out: Path, unit: Unit, *, console: Console, progress: bool = True
) -> None:
    """Train the unit's run, resume it, or leave a finished one as it is."""
    run_dir = out / "runs" / unit.name
    summary = run_dir / "train_summary.json"
    if summary.is_file() and not json.loads(summary.read_text()).get("interrupted"):
        return
    cfg = unit_config(study, unit.base, unit.seed)
    # resume whatever was started, checkpoint or not (a kill before the first one)
    resume = (run_dir / "config.yaml").is_file()
    averages = [a for a in ("ema", "swa") if getattr(cfg.method, a) is not None]
    tracking = f", tracking {' and '.join(a.upper() for a in averages)}" if averages else ""
    console.print(f"[bold]{unit.name}[/bold]: training {unit.base} "
                  f"({cfg.train.steps} steps{tracking})")
    # one writer per run directory (a second study on the same --out is refused); rank 0 holds
    # it for a multi-GPU unit
    with run_lock(run_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext():
        train(cfg, run_dir, resume=resume, progress=progress)


def measure(
    study: StudyConfig, out: Path, unit: Unit, *, method: str, progress: bool = True
) -> dict[str, Any]:
    """Quality, flatness and robustness of one method's weights of the unit's run."""
    from flatgen.study.measure import measure_method

    run = load_run(out / "runs" / unit.name)
    weights = split_method(method)[1]
    t0 = time.perf_counter()
    grid = out / "runs" / unit.name / "eval" / f"samples_{method}.png"
    metrics = measure_method(run, weights, study.evaluations, method=method, progress=progress,
                             grid=grid)
    return {"method": method, "seed": unit.seed, "base": unit.base, "weights": weights,
            "seconds": round(time.perf_counter() - t0, 1), "metrics": metrics}


DIFFUSION = StudyKind(
    name="diffusion",
    config=StudyConfig,
    load=load_study_config,
    units=plan_diffusion_units,
    run_config=_run_config,
    saved_run_config=_saved_run_config,
    evaluations=_evaluations,
    result_path=result_path,
    train_unit=train_unit,
    measure=measure,
)
