"""Collect a study's measurements into results.csv / results.json, a table, plots and report.html."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flatgen.io import atomic_write, write_json_atomic, write_text_atomic
from flatgen.report.claims import evaluate_claims
from flatgen.study.config import StudyConfig
from flatgen.study.run import load_results

QUALITY_TITLES = {"w2": "W2", "digits_fid": "dFID"}


def table_columns(metric: str, steps: Sequence[int] = (20, 100)) -> list[tuple[str, str, str]]:
    """(metric key, column title, format); the table shows those that were measured.

    `metric` is the quality metric the robustness suites used (digits_fid on digits, else w2).
    """
    q = QUALITY_TITLES.get(metric, metric)
    return [
        *[(f"w2@T{k}", f"W2 T'={k}", ".3f") for k in steps],
        *[(f"digits_fid@T{k}", f"dFID T'={k}", ".2f") for k in steps],
        ("lambda_max", "λmax", ".3g"),
        ("hessian_trace", "trace", ".3g"),
        ("loss_increase_worst@0.5", "Δloss worst ρ=0.5", ".3g"),
        ("eps_norm_gap_mean", "ε-norm gap", ".3f"),
        (f"{metric}@float", f"{q} float (n={{n}})", ".3f"),
        (f"{metric}@w8-channel", f"{q} 8-bit", ".3f"),
        (f"{metric}@w6-channel", f"{q} 6-bit", ".3f"),
        (f"{metric}@w4-channel", f"{q} 4-bit", ".3f"),
        (f"{metric}@w3-channel", f"{q} 3-bit", ".3f"),
        ("robust_eps_denoiser_linf_t100", "robust ε (x_t, L∞)", ".3g"),
        ("robust_eps_initial_noise_linf", "robust ε (x_T, L∞)", ".3g"),
        ("robust_eps_weight_noise_sigma", "robust σ (weights)", ".3g"),
    ]


def quality_metric(rows: Sequence[dict]) -> str:
    """digits_fid where it was measured (it separates digits models; W2 in pixels does not)."""
    return "digits_fid" if any("digits_fid@T20" in r["metrics"] or any(
        k.startswith("digits_fid@") for k in r["metrics"]) for r in rows) else "w2"


def _scalar_metrics(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row["metrics"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}


def robustness_metric(rows: Sequence[dict]) -> str:
    """The quality metric the robustness suites were scored with."""
    return next((r["metrics"]["robustness_metric"] for r in rows if "robustness_metric" in r["metrics"]),
                quality_metric(rows))


def summary_table(rows: Sequence[dict], methods: Sequence[str],
                  steps: Sequence[int] = (20, 100)) -> tuple[list[str], list[list[str]]]:
    """Paper-style table: mean ± std over seeds for each method and measured column."""
    metric = robustness_metric(rows)
    n = next((r["metrics"]["robustness_detail"]["n_samples"] for r in rows
              if r["metrics"].get("robustness_detail")), "?")
    present = [(k, t.replace("{n}", str(n)), f) for k, t, f in table_columns(metric, steps)
               if any(k in _scalar_metrics(r) for r in rows)]
    header = ["method", "seeds"] + [title for _, title, _ in present]
    body = []
    for m in methods:
        mrows = [_scalar_metrics(r) for r in rows if r["method"] == m]
        if not mrows:
            continue
        cells = [m, str(len(mrows))]
        for key, _, fmt in present:
            vals = [r[key] for r in mrows if key in r and math.isfinite(r[key])]
            if not vals:
                cells.append("—")
                continue
            mean = sum(vals) / len(vals)
            # a robust ε beyond the sweep counts as the largest ε tried: the mean is then a lower bound
            bound = "≥ " if any(r.get(f"{key}_censored") for r in mrows) else ""
            if len(vals) > 1:
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                cells.append(f"{bound}{mean:{fmt}} ± {std:{fmt}}")
            else:
                cells.append(f"{bound}{mean:{fmt}}")
        body.append(cells)
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "seed", "base", "weights", "metric", "value"])
    for r in rows:
        for k, v in sorted(_scalar_metrics(r).items()):
            writer.writerow([r["method"], r["seed"], r["base"], r["weights"], k, repr(v)])
    return write_text_atomic(path, buf.getvalue())


def collect_study(study: StudyConfig, out: Path, samples: bool = True) -> dict[str, Any]:
    """Build every report file from the measurements found in `out`; returns the summary."""
    from flatgen.report.html import write_report
    from flatgen.report.plots import study_plots

    rows, missing = load_results(out, study)
    if not rows:
        raise ValueError(f"no finished runs in {str(out)!r}: run `flatgen study` first")
    methods = [m for m in study.methods if any(r["method"] == m for r in rows)]
    header, body = summary_table(rows, methods, study.evaluations.quality_steps)
    claims = evaluate_claims(rows, methods, study.evaluations.quality_steps, quality_metric(rows))
    write_csv(rows, out / "results.csv")
    compact = [{k: v for k, v in r.items() if k != "metrics"}
               | {"metrics": {k: v for k, v in r["metrics"].items() if k != "robustness_detail"}}
               for r in rows]
    write_json_atomic(out / "results.json", {
        "study": study.model_dump(mode="json"), "results": compact, "missing": missing,
        "claims": [c.as_dict() for c in claims],
    })
    table_md = markdown_table(header, body)
    write_text_atomic(out / "table.md", table_md)
    plots = study_plots(rows, methods, study, out, samples=samples)
    report = write_report(out / "report.html", study, header, body, claims, plots, missing, rows)
    return {"header": header, "body": body, "claims": claims, "missing": missing,
            "report": report, "plots": plots, "table_md": table_md}


__all__ = ["collect_study", "markdown_table", "summary_table", "write_csv", "atomic_write"]
