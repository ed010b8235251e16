"""Collect a study's measurements into results.csv / results.json, tables, plots and report.html."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flatgen.io import atomic_write, write_json_atomic, write_text_atomic
from flatgen.report.claims import evaluate_claims, verdict_settings
from flatgen.report.tables import (
    quality_metric,
    scalar_metrics,
    summary_table,
    verdict_rows,
)
from flatgen.study.config import StudyConfig
from flatgen.study.run import load_finished
from flatgen.tabulate import markdown_table


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "seed", "base", "weights", "metric", "value"])
    for r in rows:
        for k, v in sorted(scalar_metrics(r).items()):
            writer.writerow([r["method"], r["seed"], r["base"], r["weights"], k, repr(v)])
    return write_text_atomic(path, buf.getvalue())


def collect_study(study: StudyConfig, out: Path, samples: bool = True) -> dict[str, Any]:
    """Build every report file from the measurements found in `out`; returns the summary."""
    from flatgen.report.html import write_report
    from flatgen.report.plots import claim_plots, study_plots

    rows, missing = load_finished(out, study)
    methods = [m for m in study.methods if any(r["method"] == m for r in rows)]
    steps = study.evaluations.quality_steps
    header, body = summary_table(rows, methods, steps)
    claims = evaluate_claims(rows, methods=methods, steps=steps, metric=quality_metric(rows),
                             verdicts=verdict_settings(study))
    write_csv(rows, out / "results.csv")
    compact = [{k: v for k, v in r.items() if k != "metrics"}
               | {"metrics": {k: v for k, v in r["metrics"].items() if k != "robustness_detail"}}
               for r in rows]
    write_json_atomic(out / "results.json", {
        "study": study.model_dump(mode="json"), "results": compact, "missing": missing,
        "claims": [c.as_dict() for c in claims],
    })
    table_md = markdown_table(header, body)
    if claims:
        table_md += "\n" + markdown_table(*verdict_rows(claims))
    write_text_atomic(out / "table.md", table_md)
    plots = study_plots(rows, methods, study, out=out, samples=samples)
    ladders = claim_plots(claims, rows, out / "plots")
    report = write_report(out / "report.html", study=study, table=(header, body), claims=claims,
                          plots=plots, ladder_plots=ladders, missing=missing, rows=rows)
    return {"header": header, "body": body, "claims": claims, "missing": missing,
            "report": report, "plots": plots | ladders, "table_md": table_md}


__all__ = ["atomic_write", "collect_study", "markdown_table", "summary_table", "write_csv"]
