"""A study's report, whatever its kind: one collector per registered kind (study/kinds.py).

The diffusion collector turns the study directory into typed records (flatgen.records) and hands
them to report.build_report, the pure function that judges and writes; it is the one place that
knows where a study keeps its results and logs.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from flatgen.records import LADDERS, METRIC_NOTE, ReportMeta, StudyResults
from flatgen.registry import Registry
from flatgen.study.config import StudyConfig
from flatgen.study.kinds import kind_of
from flatgen.study.run import load_finished, run_study


def failed_units(out: Path) -> dict[str, str]:
    """unit -> error of the units whose last run failed (from status.json)."""
    path = out / "status.json"
    status = json.loads(path.read_text()) if path.is_file() else {}
    return {k: v.removeprefix("failed: ") for k, v in status.items()
            if isinstance(v, str) and v.startswith("failed")}


def training_logs(out: Path, rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """'<base>-s<seed>' -> [(step, loss)] from each trained run's metrics.jsonl."""
    logs: dict[str, list[tuple[int, float]]] = {}
    for base, seed in sorted({(r["base"], r["seed"]) for r in rows}):
        name = f"{base}-s{seed}"
        path = out / "runs" / name / "metrics.jsonl"
        if path.is_file():
            entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            logs[name] = [(int(e["step"]), float(e["loss"])) for e in entries
                          if isinstance(e.get("loss"), int | float) and "step" in e]
    return logs


def measurement_protocol(study: StudyConfig, rows: list[dict], out: Path) -> dict[str, str]:
    """What the report states about how the numbers were measured: the chain each sampler walks
    (read from a finished run's schedule: flatgen's respaced chain, or a pipeline's own) and
    the quality protocol (metric, n, reference, floor)."""
    from flatgen.report.tables import quality_metric, robustness_metric
    from flatgen.train import load_run

    ev = study.evaluations
    protocol: dict[str, str] = {}
    runs = sorted({(r["base"], r["seed"]) for r in rows})
    if runs:
        schedule = load_run(out / "runs" / f"{runs[0][0]}-s{runs[0][1]}").schedule
        samplers = dict.fromkeys([ev.sampler, *ev.robustness.samplers])
        protocol["sampling chain"] = "; ".join(f"{s}: {schedule.chain_name(s)}"
                                               for s in samplers)
    metric = {"digits_fid": "dFID (Fréchet distance in flatgen's digits-classifier features)",
              "w2": "pixel W2 (exact 2-Wasserstein; cannot rank image models)"}
    name = "inception_fid" if ev.inception_weights else quality_metric(rows)
    what = metric.get(name, "Inception FID / KID (torch-fidelity FID Inception-v3, weights "
                      f"{ev.inception_weights}; KID subsets of min(1000, n/2))")
    n = ev.n_samples or "the test-set size"
    protocol["quality"] = (f"{what} of n = {n} generated samples against the whole test split; "
                           "the floor is the same metric on n training images")
    ladders = [rec for r in rows for rec in (r["metrics"].get(LADDERS) or {}).values()
               if isinstance(rec, dict)]
    if ladders:  # what the robustness ladders were scored with, and whether it can rank
        notes = sorted({n for rec in ladders if (n := (rec.get("extra") or {}).get(METRIC_NOTE))})
        protocol["robustness ladders"] = (f"scored with {robustness_metric(rows)}"
                                          + (f" ({'; '.join(notes)})" if notes else ""))
    return protocol


def report_meta(study: StudyConfig, rows: list[dict], out: Path, *,
                looks: tuple[str, ...] = ()) -> ReportMeta:
    """What the report says about the study besides its results."""
    ev = study.evaluations
    def subset(seeds: list[int] | None) -> str | None:  # only where it is not every seed
        on = [s for s in study.seeds if seeds is None or s in seeds]
        return f"seeds {', '.join(map(str, on))}" if len(on) < len(study.seeds) else None

    where = {}
    if sel := subset(ev.selection_seeds):
        where["selection ladders (the baselines' separate noise)"] = sel
    if ev.sharpness and ev.expansion and (exp := subset(ev.expansion_seeds)):
        where["second-order expansion check"] = exp
    return ReportMeta(
        protocol=measurement_protocol(study, rows, out),
        name=study.name, data=str((study.base.get("data") or {}).get("name", "digits")),
        methods=tuple(study.methods), seeds=tuple(study.seeds),
        quality_steps=tuple(ev.quality_steps), config_json=study.model_dump_json(indent=2),
        environment=f"{platform.machine()}, torch {torch.__version__}",
        measured_where=where, looks=looks, training_logs=training_logs(out, rows))


def collect_study(study: StudyConfig, out: Path, *, alpha: float | None = None,
                  decided: dict[str, tuple[str, str]] | None = None,
                  looks: tuple[str, ...] = (), progress: bool = True) -> dict[str, Any]:
    """The diffusion study's report from the results in `out`; returns its summary."""
    from flatgen.report import build_report

    out = Path(out)
    rows, missing = load_finished(out, study)
    results: StudyResults = {"rows": rows, "missing": missing}
    report = build_report(results, study.verdicts, report_meta(study, rows, out, looks=looks),
                          out=out, alpha=alpha, decided=decided,
                          config=study.model_dump(mode="json"), progress=progress)
    return {"header": report.header, "body": report.body, "claims": report.claims,
            "missing": report.missing, "report": report.report, "plots": report.plots,
            "table_md": report.table_md}


def collect_sequential(outcome: Any, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """The report of a `--until-decided` study: the last look's nominal level, each decided
    claim's verdict as decided at its look, and one line per look."""
    last = len(outcome.looks) - 1
    decided = {c: (d.verdict, d.text()) for c, d in outcome.decided.items()}
    looks = (*outcome.looks, f"stopped: {outcome.stopped}")
    return collect_study(outcome.study, out, alpha=outcome.design.nominal[last], decided=decided,
                         looks=looks, progress=progress)


def collect_classifier(study: Any, out: Path, **_: Any) -> dict[str, Any]:
    """table.md, results.csv, results.json and scatter.png of a classifier study."""
    from flatgen.classify.report import write_outputs

    rows, missing = load_finished(out, study)
    failed = failed_units(out)
    return write_outputs(study, rows, failed=failed, out_dir=out, missing=missing)


COLLECTORS: Registry[Callable[..., dict[str, Any]]] = Registry("study collector")
COLLECTORS.register("diffusion", collect_study)
COLLECTORS.register("classifier", collect_classifier)


def collect(study: Any, out: Path, **kwargs: Any) -> dict[str, Any]:
    """Build a study's report from the results in `out`, whatever its kind."""
    return COLLECTORS.get(kind_of(study).name)(study, Path(out), **kwargs)


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
