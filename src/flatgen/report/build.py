"""The report: a pure function of the study's typed records.

build_report reads the results (flatgen.records), judges the claims with the verdict settings,
and writes results.csv, results.json, table.md, the plots and report.html into `out`. It imports
nothing from the study engine, trains nothing and runs no model.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.progress import make_progress
from flatgen.records import ROBUSTNESS_DETAIL, MethodResult, ReportMeta, StudyResults
from flatgen.report.claims import ClaimResult, Verdicts, evaluate_claims
from flatgen.report.tables import quality_metric, scalar_metrics, summary_table, verdict_rows
from flatgen.tabulate import markdown_table


@dataclass
class Report:
    """What build_report wrote and judged."""

    header: list[str]
    body: list[list[str]]
    claims: list[ClaimResult]
    missing: list[str]
    report: Path
    table_md: str
    plots: dict[str, Path] = field(default_factory=dict)


def write_csv(rows: Sequence[MethodResult], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "seed", "base", "weights", "metric", "value"])
    for r in rows:
        for k, v in sorted(scalar_metrics(r).items()):
            writer.writerow([r["method"], r["seed"], r["base"], r["weights"], k, repr(v)])
    return write_text_atomic(path, buf.getvalue())


def build_report(
    results: StudyResults, verdicts: Verdicts, meta: ReportMeta, *, out: Path,
    alpha: float | None = None, decided: Mapping[str, tuple[str, str]] | None = None,
    config: dict[str, Any] | None = None, progress: bool = True,
) -> Report:
    """Judge the claims on `results` and write every report file into `out`. alpha: a
    sequential look's nominal level (default verdicts.alpha); decided: claim id -> (verdict,
    'decided at look k of K, n=N') for the claims a sequential study decided at an earlier
    look: the verdict stands as decided there (the effect and interval shown are on every
    seed); config: the study config, stored in results.json."""
    from flatgen.report.html import write_report
    from flatgen.report.plots import claim_plots, study_plots

    out = Path(out)
    rows, missing = results["rows"], results["missing"]
    methods = [m for m in meta.methods if any(r["method"] == m for r in rows)]
    steps = list(meta.quality_steps)
    with make_progress(progress, transient=True) as prog:
        task = prog.add_task("report: claims, tables, plots, html", total=4) if prog else None

        def done() -> None:
            if prog is not None:
                prog.advance(task)

        header, body = summary_table(rows, methods, steps)
        claims = evaluate_claims(rows, methods=methods, steps=steps, metric=quality_metric(rows),
                                 verdicts=verdicts, alpha=alpha)
        for c in claims:
            if c.spec.id in (decided or {}):
                c.primary.verdict, c.decided_at = decided[c.spec.id]
        done()
        write_csv(rows, out / "results.csv")
        compact = [{k: v for k, v in r.items() if k != "metrics"}
                   | {"metrics": {k: v for k, v in r["metrics"].items() if k != ROBUSTNESS_DETAIL}}
                   for r in rows]
        write_json_atomic(out / "results.json", {
            "study": config or {}, "results": compact, "missing": missing,
            "claims": [c.as_dict() for c in claims], "looks": list(meta.looks),
        })
        table_md = markdown_table(header, body)
        if claims:
            table_md += "\n" + markdown_table(*verdict_rows(claims))
        write_text_atomic(out / "table.md", table_md)
        done()
        plots = study_plots(rows, methods, steps=steps, pdir=out / "plots",
                            training_logs=meta.training_logs)
        ladders = claim_plots(claims, rows, out / "plots")
        done()
        report = write_report(out / "report.html", meta=meta, table=(header, body),
                              claims=claims, plots=plots, ladder_plots=ladders, missing=missing,
                              rows=rows)
        done()
    return Report(header, body, claims, missing, report, table_md, plots | ladders)


__all__ = ["Report", "build_report", "write_csv"]
