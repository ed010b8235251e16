"""report.html: one self-contained page (images embedded) that reads without the tool."""

from __future__ import annotations

import base64
import html
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from flatgen.io import write_text_atomic
from flatgen.report.claims import Claim
from flatgen.study.config import StudyConfig

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.verdict{font-weight:600} .reproduced{color:#17702f} .not{color:#b00020} .weak{color:#8a6d00}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{max-width:520px} .samples img{max-width:100%} code{background:#f5f5f5;padding:0 .2em}
"""

PLOT_CAPTIONS = {
    "quality_vs_steps": "Quality versus the number of sampling steps T' (exposure bias shows at small T').",
    "lambda_max": "Top Hessian eigenvalue of the training loss on a fixed batch (lower = flatter).",
    "loss_vs_worst_perturbation": "Training-loss increase under the worst weight perturbation in an L2 ball "
                                  "of radius ρ (5 ascent steps; a flatter minimum rises less).",
    "loss_vs_random_perturbation": "Mean training-loss increase under filter-normalized Gaussian weight noise.",
    "quality_vs_bits": "Quality after per-channel round-to-nearest weight quantization.",
    "attack_vs_eps": "Denoising-loss increase under a PGD L∞ attack on the denoiser input x_t.",
    "quality_vs_weight_noise": "Quality under filter-normalized Gaussian weight noise.",
    "samples": "Samples from every method with the same initial noise.",
}


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _verdict_class(verdict: str) -> str:
    if verdict.startswith("reproduced"):
        return "reproduced"
    if verdict.startswith("not") or "other way" in verdict:
        return "not"
    return "weak"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _claims(claims: Sequence[Claim]) -> str:
    if not claims:
        return "<p>No claim could be checked with the measurements this study took.</p>"
    items = []
    for c in claims:
        comps = "".join(
            f"<li>{html.escape(x.a)} {x.mean_a:.4g}" + (f" ± {x.std_a:.2g}" if x.n_a > 1 else "")
            + f" vs {html.escape(x.b)} {x.mean_b:.4g}" + (f" ± {x.std_b:.2g}" if x.n_b > 1 else "")
            + f" on <code>{html.escape(x.metric)}</code> ({x.n_a}/{x.n_b} seeds): {html.escape(x.verdict)}</li>"
            for x in c.comparisons)
        note = f"<br><small>{html.escape(c.note)}</small>" if c.note else ""
        items.append(
            f'<li><b>{html.escape(c.text)}</b> <small>({html.escape(c.source)})</small><br>'
            f'<span class="verdict {_verdict_class(c.verdict)}">{html.escape(c.verdict)}</span>'
            f"<ul>{comps}</ul>{note}</li>")
    return "<ol>" + "".join(items) + "</ol>"


def write_report(path: Path, study: StudyConfig, header, body, claims: Sequence[Claim],
                 plots: dict[str, Path], missing: Sequence[str], rows: Sequence[dict]) -> Path:
    seconds = sum(r.get("seconds", 0) for r in rows)
    figures = "".join(
        f'<figure class="{"samples" if name == "samples" else ""}">{_img(p)}'
        f"<figcaption>{html.escape(PLOT_CAPTIONS.get(name, name))}</figcaption></figure>"
        for name, p in plots.items())
    missing_html = (f"<p><b>Missing runs</b> (failed or not yet run): {html.escape(', '.join(missing))}</p>"
                    if missing else "")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>flatgen study: {html.escape(study.name)}</title><style>{CSS}</style></head><body>
<h1>Does flatness buy robustness? — {html.escape(study.name)}</h1>
<p class="sub">flatgen study on {html.escape(study.base.get("data", {}).get("name", "digits"))},
methods {html.escape(", ".join(study.methods))}, seeds {html.escape(", ".join(map(str, study.seeds)))};
written {time.strftime("%Y-%m-%d %H:%M")} on {html.escape(platform.machine())}, torch {torch.__version__}.</p>
<h2>Claims</h2>
<p>Each claim of Lee et al. (ICCV 2025), checked on this study's numbers. With two or more seeds,
a difference counts only when it exceeds twice its standard error; with one seed the verdict
only says which way the numbers point.</p>
{_claims(claims)}
<h2>Results</h2>
<p>Mean ± standard deviation over seeds. W2: exact 2-Wasserstein distance to the test set;
dFID: Fréchet distance in the features of flatgen's digits classifier (digits-FID, not Inception FID).
Real-data floors are in <code>results.json</code>. Lower is better except for robust ε/σ.</p>
{_table(header, body)}
{missing_html}
<h2>Figures</h2>
{figures}
<h2>How this was measured</h2>
<p>Measurement time (excluding training): {seconds:.0f} s. Per-run details are in
<code>runs/&lt;method&gt;-s&lt;seed&gt;/eval/</code>; every number above is in <code>results.csv</code>.</p>
<pre>{html.escape(study.model_dump_json(indent=2))}</pre>
</body></html>
"""
    return write_text_atomic(path, page)
