"""report.html: one self-contained page (images embedded) that reads without the tool."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from pathlib import Path

from flatgen.io import write_text_atomic
from flatgen.records import EXPANSION, MethodResult, ReportMeta
from flatgen.report.claims import ClaimResult, Comparison
from flatgen.report.tables import fmt_effect, fmt_p, fmt_source, per_seed_rows, verdict_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}
h1{margin:.2em 0;font-size:1.5em} .sub{color:#666;margin-top:0;font-size:.9em}
table.verdicts{font-size:.78em;width:100%} table.verdicts td,table.verdicts th{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right} th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.verdict{font-weight:600} .reproduced{color:#17702f} .not{color:#b00020} .weak{color:#8a6d00}
.excluded{color:#1f4e9c}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:.85em;color:#555}
img{max-width:600px} .samples img{max-width:100%} code{background:#f5f5f5;padding:0 .2em}
pre{white-space:pre-wrap;font-size:.8em}
"""

PLOT_CAPTIONS = {
    "quality_vs_steps": "Quality at the T' of the quality table (evaluations.quality_steps); "
                        "every ladder level is in the few-step claim's plot.",
    "sharpness": "Top Hessian eigenvalue of the training loss on a fixed batch (lower = flatter).",
    "loss_vs_worst_perturbation": "Training-loss increase under the worst weight perturbation "
                                  "found within radius ρ (a flatter minimum rises less).",
    "loss_vs_random_perturbation": "Mean training-loss increase under filter-normalized "
                                   "Gaussian weight noise.",
    "quality_vs_bits": "Quality after per-channel round-to-nearest weight quantization "
                       "(32 = float).",
    "attack_vs_eps": "Denoising-loss increase under a PGD L∞ attack on the denoiser input x_t.",
    "quality_vs_weight_noise": "Quality under filter-normalized Gaussian weight noise.",
    "samples": "Samples from every method with the same initial noise.",
    "expansion_regression": "What λmax alone predicts: the measured training-loss rise of every "
                            "weight perturbation against λmax‖δ‖² and against the full "
                            "second-order prediction, each with its least-squares line and R²; "
                            "beside it, where the same δ was scored, the quality rise against "
                            "the loss rise (quantization). A low R² on λmax‖δ‖² means λmax does "
                            "not speak for robustness to that perturbation.",
    "loss_curve": "Training loss of every run (the logged window means).",
    "expansion": "Does the second-order argument hold? Measured training-loss rise against the "
                 "rise predicted from one gradient and one Hessian-vector product (g·δ + ½δᵀHδ), "
                 "for every weight perturbation the study applied (quantization, weight noise, "
                 "the worst case in a per-filter ball). On the diagonal the full second-order "
                 "expansion holds; it uses the whole Hessian along δ, so agreement says nothing "
                 "about λmax alone.",
}


def _caption(name: str, rows: Sequence[MethodResult]) -> str:
    text = PLOT_CAPTIONS.get(name, name)
    if name == "expansion":
        from flatgen.analysis.expansion import expansion_title

        text += " " + expansion_title([e for r in rows
                                       for e in r["metrics"].get(EXPANSION) or []])
    return text


def _p_clause(p: float | None) -> str:
    """'= 0.03' or '< 0.001': the comparison written once."""
    text = fmt_p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _verdict_class(verdict: str) -> str:
    if verdict.startswith("reproduced"):
        return "reproduced"
    if verdict.startswith("contradicted"):
        return "not"
    if verdict.startswith("excluded"):
        return "excluded"
    return "weak"


def _table(header: Sequence[str], body: Sequence[Sequence[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in body)
    return f'<table class="{cls}"><tr>{head}</tr>{rows}</table>'


def _verdict_table(claims: Sequence[ClaimResult]) -> str:
    if not claims:
        return "<p>No claim could be checked with the measurements this study took.</p>"
    header, body = verdict_rows(claims)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r[:-1])
        + f'<td class="verdict {_verdict_class(r[-1])}">{html.escape(r[-1])}</td></tr>'
        for r in body)
    return f'<table id="verdicts" class="verdicts"><tr>{head}</tr>{rows}</table>'


def _comparison(c: Comparison) -> str:
    s = c.sample
    test = (f"{c.test.test}, p {_p_clause(c.test.p)}"
            + (f", adjusted p {_p_clause(c.p_holm)}" if c.p_holm is not None else "")
            + (f"; short of the source's effect: p {_p_clause(c.p_excl)}"
               if c.p_excl is not None else "")
            if c.test else "no test")
    ratios = "; ".join(f"{m} {v:.3g}x clean" for m, v in s.ratios.items())
    if s.clean_ratio is not None:
        ratios = f"clean score {s.a}/{s.b} = {s.clean_ratio:.3g}"
    if s.ratio_by_margin:
        ratios += "; robust-level ratio at margin m: " + ", ".join(
            f"m={m}: {'—' if v is None else f'×{v:.3g}'}" for m, v in s.ratio_by_margin.items())
    parts = [f"<b>{html.escape(s.a)} vs {html.escape(s.b)}</b> on <code>{html.escape(s.key)}"
             f"</code> ({c.role}): {html.escape(s.regime or '')}",
             f"effect {html.escape(fmt_effect(c))}; {html.escape(test)}",
             f'<span class="verdict {_verdict_class(c.verdict)}">{html.escape(c.verdict)}</span>']
    if ratios:
        parts.append(html.escape(ratios if s.clean_ratio is not None
                                 else f"degradation ratio: {ratios}"))
    table = _table(*per_seed_rows(c)) if any(s.values.values()) else ""
    return "<li>" + "<br>".join(parts) + table + "</li>"


def _claim_details(claims: Sequence[ClaimResult], ladder_plots: dict[str, Path]) -> str:
    items = []
    for r in claims:
        caption = ("rise over each model's own clean score vs strength (mean over seeds); "
                   "dashed: the rise threshold" if r.spec.kind == "threshold" else
                   "score vs level per method (mean over seeds); dotted: the baseline on its "
                   "selection noise; dashed: the judged level")
        plot = (f"<figure>{_img(ladder_plots[r.spec.id])}<figcaption>{caption}</figcaption>"
                "</figure>" if r.spec.id in ladder_plots else "")
        label = f"<br><small>{html.escape(r.label)}</small>" if r.label else ""
        comps = "".join(_comparison(c) for c in (r.primary, *r.supporting))
        effect = (f"<br><small>Source's effect: {html.escape(fmt_source(r.primary, r))}"
                  "</small>")
        items.append(
            f'<li id="claim-{html.escape(r.spec.id)}"><b>{html.escape(r.text)}</b> '
            f"<small>({html.escape(r.source)})</small><br>"
            f"<small>Decides: {html.escape(r.spec.decides)}</small>{effect}{label}"
            f"<ul>{comps}</ul>{_levels_table(r)}{plot}</li>")
    return "<ol>" + "".join(items) + "</ol>"


def _levels_table(r: ClaimResult) -> str:
    """Every level of a ladder claim with its effect and interval (unadjusted; only the judged
    level counts in the family), so a reader sees where the method is better or worse."""
    if not r.levels:
        return ""
    body = [[f"{c.sample.level:g}" if c.sample.level is not None else "—", fmt_effect(c),
             fmt_p(c.test.p) if c.test else "—", c.verdict] for c in r.levels]
    return ("<p><small>Every level (unadjusted; only the judged level is in the family):"
            "</small></p>" + _table([r.spec.level_name, "effect [95% CI]", "p", "reading"], body))


def write_report(
    path: Path, *, meta: ReportMeta, table: tuple[list[str], list[list[str]]],
    claims: Sequence[ClaimResult], plots: dict[str, Path], missing: Sequence[str],
    rows: Sequence[MethodResult], ladder_plots: dict[str, Path] | None = None,
) -> Path:
    """report.html: the verdict table first (it fits a 1280x800 window), then the details."""
    seconds = sum(r.get("seconds", 0) for r in rows)
    figures = "".join(
        f'<figure class="{"samples" if name == "samples" else ""}">{_img(p)}'
        f"<figcaption>{html.escape(_caption(name, rows))}</figcaption></figure>"
        for name, p in plots.items())
    missing_html = ("<p><b>Missing runs</b> (failed or not yet run): "
                    f"{html.escape(', '.join(missing))}</p>" if missing else "")
    where = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                    for k, v in meta.measured_where.items())
    looks = "".join(f"<li>{html.escape(x)}</li>" for x in meta.looks)
    protocol = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                       for k, v in meta.protocol.items())
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>flatgen study: {html.escape(meta.name)}</title><style>{CSS}</style></head><body>
<h1>Does flatness buy robustness? — {html.escape(meta.name)}</h1>
<p class="sub">{html.escape(meta.data)}; methods {html.escape(", ".join(meta.methods))};
seeds {html.escape(", ".join(map(str, meta.seeds)))}. Each primary claim is tested against no
effect and against the source's effect; adjusted p: Holm with Shaffer's constraint across the
primary claims. One seed gives a direction only.</p>
{_verdict_table(claims)}
<p class="sub"><b>reproduced</b>: significant in the claimed direction; <b>contradicted</b>:
significant the other way; <b>excluded at the source's size</b>: no effect shown, and an effect
as large as the source's (column 4) is ruled out; <b>inconclusive</b>: the interval still holds
both, with the seeds it would take; <b>untestable here</b>: the baseline is not hurt where the
claim is judged; <b>direction only</b>: one seed, no test. Effects are method − baseline (×: a
ratio of robust levels); "excl." is the adjusted p of ruling out the source's effect.</p>
<h2>Claims in detail</h2>
<p>Each claim of Lee et al. (ICCV 2025) on this study's per-seed values. Welch's t, a paired t
where both sides share their seeds (the evaluation noise is drawn per training seed, common to
the models of a seed), and an exact rank test where a value lies beyond the sweep (shown "≥",
never averaged as exact). "Reproduced"/"contradicted": significant against no effect;
"excluded at the source's size": the one-sided test that the effect falls short of the source's
is significant; "inconclusive": the interval holds both. A ladder claim is judged at the level
fixed in the config before the run; where the baseline does not degrade there, the claim is
untestable here. Threshold claims judge each model on the rise over its own clean score.
Supporting comparisons use their own unadjusted p and are not counted as evidence.</p>
{f"<p>How it was measured:</p><ul>{protocol}</ul>" if protocol else ""}
{f"<p>Sequential looks:</p><ul>{looks}</ul>" if looks else ""}
{f"<p>Measured on a subset of seeds:</p><ul>{where}</ul>" if where else ""}
{_claim_details(claims, ladder_plots or {})}
<h2>Results</h2>
<p>Mean ± standard deviation over seeds. W2: exact 2-Wasserstein distance to the test set;
dFID: Fréchet distance in the features of flatgen's digits classifier (digits-FID, not Inception
FID). Real-data floors are in <code>results.json</code>. Lower is better in every column.
</p>
<div class="scroll">{_table(*table)}</div>
{missing_html}
<h2>Figures</h2>
{figures}
<h2>How this was measured</h2>
<p>Written {time.strftime("%Y-%m-%d %H:%M")}; {html.escape(meta.environment)}. Measurement time
(excluding training): {seconds:.0f} s. Per-run details are in
<code>runs/&lt;method&gt;-s&lt;seed&gt;/eval/</code>; every number above is in
<code>results.csv</code>.</p>
<pre>{html.escape(meta.config_json)}</pre>
</body></html>
"""
    return write_text_atomic(path, page)
