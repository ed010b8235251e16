"""A study's report, whatever its kind: one collector per registered kind (study/kinds.py).

The collectors sit above the engine: they read the results through study.run.load_results,
which the diffusion report (flatgen.report.collect) uses too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from flatgen.study.kinds import kind_of
from flatgen.study.run import load_finished, run_study


def failed_units(out: Path) -> dict[str, str]:
    """unit -> error of the units whose last run failed (from status.json)."""
    path = out / "status.json"
    status = json.loads(path.read_text()) if path.is_file() else {}
    return {k: v.removeprefix("failed: ") for k, v in status.items()
            if isinstance(v, str) and v.startswith("failed")}


def collect_diffusion(study: Any, out: Path, *, samples: bool = True) -> dict[str, Any]:
    from flatgen.report.collect import collect_study

    return collect_study(study, out, samples=samples)


def collect_classifier(study: Any, out: Path, *, samples: bool = True) -> dict[str, Any]:
    """table.md, results.csv, results.json and scatter.png of a classifier study."""
    from flatgen.classify.report import write_outputs

    rows, missing = load_finished(out, study)
    failed = failed_units(out)
    return write_outputs(study, rows, failed=failed, out_dir=out, missing=missing)


COLLECTORS: dict[str, Callable[..., dict[str, Any]]] = {
    "diffusion": collect_diffusion,
    "classifier": collect_classifier,
}


def collect(study: Any, out: Path, *, samples: bool = True) -> dict[str, Any]:
    """Build a study's report from the results in `out`; returns the kind's summary."""
    return COLLECTORS[kind_of(study).name](study, Path(out), samples=samples)


def run_classifier_study(
    cfg: Any, out_dir: Path, *, progress: bool = True, console: Console | None = None
) -> dict[str, Any]:
    """Run every (method, seed) of a classifier study not yet done, then write its report
    (results.json, results.csv, table.md, scatter.png). Returns the report's summary with
    "skipped", "failed" (this call's failed units) and "wall_seconds".

    cfg is a ClassifierStudyConfig or its dict (validated here: a bad key raises pydantic's
    ValidationError). A failed run is recorded (error.log) and the others go on; when no run
    has results, ValueError.
    """
    from flatgen.classify.config import ClassifierStudyConfig

    if not isinstance(cfg, ClassifierStudyConfig):
        cfg = ClassifierStudyConfig.model_validate(cfg)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    status = run_study(cfg, out_dir, console or Console(stderr=True), progress=progress)
    summary = collect(cfg, out_dir)
    skipped = sum(v.startswith("skipped") for v in status.values())
    return {**summary, "skipped": skipped, "wall_seconds": round(time.perf_counter() - t0, 1)}
