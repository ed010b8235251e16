"""The study's figures (matplotlib, Agg): one curve or bar per method, error bars over seeds."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.ticker

from flatgen.plotting import method_style, pyplot, save_figure
from flatgen.records import (
    EXPANSION,
    LADDERS,
    LAMBDA_MAX,
    PERTURBATION_DETAIL,
    ROBUSTNESS_DETAIL,
    SAMPLE_GRID,
    quality_key,
)
from flatgen.report.tables import QUALITY_TITLES, quality_metric, robustness_metric
from flatgen.stats import mean_std

plt = pyplot()


def _curves(
    rows: Sequence[dict],
    methods: Sequence[str],
    extract: Callable[[dict], tuple[list[float], list[float]] | None],
):
    """method -> (x, mean, std) over seeds, for curves sharing their x values."""
    out = {}
    for m in methods:
        per_seed = [c for r in rows if r["method"] == m and (c := extract(r)) is not None]
        if not per_seed:
            continue
        xs = per_seed[0][0]
        ys = [c[1] for c in per_seed if c[0] == xs]
        stats = [
            mean_std([y[i] for y in ys if y[i] is not None and math.isfinite(y[i])])
            for i in range(len(xs))
        ]
        out[m] = (xs, [s[0] for s in stats], [s[1] for s in stats])
    return out


def _line_plot(
    curves, path: Path, xlabel: str, ylabel: str, title: str, logx: bool = False
) -> Path | None:
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for m, (xs, mean, std) in curves.items():
        ax.errorbar(xs, mean, yerr=std, capsize=3, label=m, **method_style(m, seen=list(curves)))
    if logx:  # ticks at the measured x values, written plainly (not 3x10^-1)
        ax.set_xscale("log")
        ax.set_xticks(sorted({x for xs, _, _ in curves.values() for x in xs}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path, bbox_inches="tight")


def _detail(r: dict, suite: str) -> Any:
    detail = r["metrics"].get(ROBUSTNESS_DETAIL) or {}
    return (detail.get(suite) or {}).get(r["weights"])


def _metric_of(q: Any, metric: str) -> float | None:
    return q.get(metric) if isinstance(q, dict) else q


@dataclass(frozen=True)
class CurvePlot:
    """One figure of the study: a curve per method (mean ± sd over seeds) of what `extract`
    reads from each result; x labels and title as written."""

    name: str
    extract: Callable[[dict], tuple[list[float], list[float]] | None]
    xlabel: str
    ylabel: str
    title: str
    logx: bool = False


def _curve_plots(rows: Sequence[dict], steps: Sequence[int]) -> list[CurvePlot]:
    metric, qmetric = robustness_metric(rows), quality_metric(rows)
    mtitle = f"{QUALITY_TITLES.get(metric, metric)} (lower is better)"

    def quality_vs_steps(r):
        ys = [r["metrics"].get(quality_key(qmetric, k)) for k in steps]
        return (list(steps), ys) if all(y is not None for y in ys) else None

    def vs_bits(r):
        d = _detail(r, "quant")
        if not d or "channel" not in d:
            return None
        return ([32, *d["channel"]["bits"]], [_metric_of(d["float"], metric)]
                + [_metric_of(q, metric) for q in d["channel"]["quality"]])

    def vs_eps(r):
        linf = ((_detail(r, "attack") or {}).get("denoiser_input") or {}).get("linf") or {}
        if not linf:
            return None
        rec = linf[sorted(linf, key=int)[-1]]  # a ladder record (flatgen.records)
        return [0.0, *rec["levels"]], [0.0, *(v / rec["clean"] - 1 for v in rec["values"])]

    def vs_sigma(r):
        d = _detail(r, "noise")
        return ([0.0, *d["levels"]], [d["clean"], *d["values"]]) if d else None  # a record

    def perturbation(key: str, radius: str):
        def extract(r):
            curve = (r["metrics"].get(PERTURBATION_DETAIL) or {}).get(key)
            return (curve[radius], curve["increase"]) if curve else None

        return extract

    return [
        CurvePlot("quality_vs_steps", quality_vs_steps, "sampling steps T'",
                  f"{QUALITY_TITLES.get(qmetric, qmetric)} to test set (lower is better)",
                  "Quality vs sampling steps", logx=True),
        CurvePlot("quality_vs_bits", vs_bits, "weight bits (32 = float)", mtitle,
                  "Quality under weight quantization (per-channel RTN)", logx=True),
        CurvePlot("attack_vs_eps", vs_eps, "PGD L∞ epsilon on x_t",
                  "relative increase of denoising loss",
                  "Adversarial perturbation of the denoiser input"),
        CurvePlot("quality_vs_weight_noise", vs_sigma, "filter-normalized weight-noise σ",
                  mtitle, "Quality under Gaussian weight noise"),
        CurvePlot("loss_vs_worst_perturbation", perturbation("worst_case", "rho"),
                  "per-filter radius ρ (||δ_f|| ≤ ρ ||w_f||)", "worst-case training-loss increase",
                  "Loss under worst-case weight perturbation", logx=True),
        CurvePlot("loss_vs_random_perturbation", perturbation("average_case", "sigma"),
                  "filter-normalized weight-noise σ", "mean training-loss increase",
                  "Loss under random weight perturbation", logx=True),
    ]


def study_plots(
    rows: Sequence[dict], methods: Sequence[str], *, steps: Sequence[int], pdir: Path,
    training_logs: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> dict[str, Path]:
    """Write every figure the records allow into pdir; name -> path. Reads records only."""
    plots: dict[str, Path | None] = {
        p.name: _line_plot(_curves(rows, methods, p.extract), pdir / f"{p.name}.png", p.xlabel,
                           p.ylabel, p.title, logx=p.logx)
        for p in _curve_plots(rows, steps)
    }
    plots["sharpness"] = _lambda_bars(rows, methods, pdir)
    plots["expansion"] = _expansion_plot(rows, methods, pdir)
    plots["expansion_regression"] = _expansion_plot(rows, methods, pdir, regression=True)
    plots["loss_curve"] = _loss_curves(training_logs or {}, pdir)
    plots["samples"] = _sample_grids(rows, methods, pdir)
    return {k: v for k, v in plots.items() if v is not None}


def _lambda_bars(rows: Sequence[dict], methods: Sequence[str], pdir: Path) -> Path | None:
    lam = {m: [r["metrics"][LAMBDA_MAX] for r in rows
               if r["method"] == m and LAMBDA_MAX in r["metrics"]] for m in methods}
    lam = {m: v for m, v in lam.items() if v}
    if not lam:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    stats = [mean_std(v) for v in lam.values()]
    several = any(len(v) > 1 for v in lam.values())  # one seed has no spread to draw
    ax.bar(list(lam), [s[0] for s in stats], yerr=[s[1] for s in stats] if several else None,
           capsize=4, color=[method_style(m, seen=list(lam))["color"] for m in lam])
    ax.set(ylabel="top Hessian eigenvalue λmax", title="Sharpness per method (lower is flatter)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, pdir / "sharpness.png")


def _expansion_plot(rows: Sequence[dict], methods: Sequence[str], pdir: Path, *,
                    regression: bool = False) -> Path | None:
    """Predicted vs measured loss rise of every weight perturbation, one colour per method; with
    regression, what lambda_max alone predicts beside what the full second order does."""
    from flatgen.analysis.plots import plot_expansion, plot_expansion_regression

    by_method = {m: [e for r in rows if r["method"] == m
                     for e in r["metrics"].get(EXPANSION) or []]
                 for m in methods}
    by_method = {m: v for m, v in by_method.items() if v}
    if not by_method:
        return None
    if regression:
        return plot_expansion_regression(by_method, pdir / "expansion_regression.png")
    return plot_expansion(by_method, pdir / "expansion.png")


def _loss_curves(logs: Mapping[str, Sequence[tuple[int, float]]], pdir: Path) -> Path | None:
    """The training loss of each trained run: logs maps '<base>-s<seed>' -> (step, loss)."""
    if not any(logs.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bases = sorted({name.rsplit("-s", 1)[0] for name in logs})
    colours = {b: f"C{i}" for i, b in enumerate(bases)}
    drawn = set()
    for name, log in sorted(logs.items()):
        if not log:
            continue
        base = name.rsplit("-s", 1)[0]
        ax.plot([s for s, _ in log], [v for _, v in log], color=colours[base], alpha=0.7, lw=1,
                label=None if base in drawn else base)
        drawn.add(base)
    ax.set(xlabel="training step", ylabel="training loss (logged window mean)", yscale="log",
           title="Training loss per run")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return save_figure(fig, pdir / "loss_curve.png", bbox_inches="tight")


def _sample_grids(rows: Sequence[dict], methods: Sequence[str], pdir: Path) -> Path | None:
    """The sample grid each method saved when it was measured (its first seed), side by side."""
    grids = []
    for m in methods:
        r = min((r for r in rows if r["method"] == m and r["metrics"].get(SAMPLE_GRID)),
                key=lambda r: r["seed"], default=None)
        if r is not None and Path(r["metrics"][SAMPLE_GRID]).is_file():
            grids.append((m, plt.imread(r["metrics"][SAMPLE_GRID])))
    if not grids:
        return None
    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 2.9))
    for ax, (m, img) in zip(axes if len(grids) > 1 else [axes], grids, strict=True):
        ax.imshow(img, cmap="gray")
        ax.set_title(m, fontsize=9)
        ax.axis("off")
    fig.suptitle("Samples (same initial noise for every method of a seed)", fontsize=9)
    return save_figure(fig, pdir / "samples.png")


def _ladder_means(rows: Sequence[dict], method: str, key: str, field: str = "values", *,
                  rise: bool = False):
    """(levels, mean over seeds per level, mean clean) of one ladder, or None; with rise, each
    seed's score minus its own clean score (what threshold claims judge; its clean is 0)."""
    recs = [rec for r in rows if r["method"] == method
            and isinstance(rec := (r["metrics"].get(LADDERS) or {}).get(key), dict)
            and rec.get(field) is not None]
    if not recs:
        return None
    levels = recs[0]["levels"]
    clean = "select_clean" if field == "select_values" else "clean"
    means = []
    for i in range(len(levels)):
        vals = [v - (rec[clean] if rise else 0.0) for rec in recs
                if (v := rec[field][i]) is not None and math.isfinite(v)]
        means.append(mean_std(vals)[0] if vals else math.nan)
    cleans = [rec[clean] for rec in recs if rec.get(clean) is not None]
    return levels, means, (0.0 if rise else mean_std(cleans)[0]) if cleans else math.nan


def ladder_plot(claim, rows: Sequence[dict], path: Path) -> Path | None:
    """Score vs level per method (mean over seeds) on the claim's deciding ladder, with the
    baseline's selection ladder dotted; the judged level, or the rise threshold, dashed."""
    s = claim.primary.sample
    rise = claim.spec.kind == "threshold"
    methods = list(dict.fromkeys([s.a, s.b, *(x for c in claim.supporting
                                              for x in (c.sample.a, c.sample.b))]))
    curves = {m: c for m in methods if (c := _ladder_means(rows, m, s.key, rise=rise))}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    levels = next(iter(curves.values()))[0]
    # positions: the clean score first (what a degradation is measured from), then the levels,
    # weakest first, on any scale
    x = list(range(len(levels) + 1))
    for m, (lv, means, clean) in curves.items():
        if list(lv) == list(levels):
            ax.plot(x, [clean, *means], label=m, **method_style(m, seen=list(curves)))
    sel = _ladder_means(rows, s.b, s.key, "select_values", rise=rise)
    if sel and list(sel[0]) == list(levels):
        ax.plot(x, [sel[2], *sel[1]], ls=":", color="gray", label=f"{s.b} (selection noise)")
    if s.tau is not None:
        ax.axhline(s.tau, color="tab:red", ls="--", lw=1, label=f"rise threshold {s.tau:.3g}")
    if s.level is not None and s.level in levels:
        ax.axvline(levels.index(s.level) + 1, color="tab:red", ls="--", lw=1,
                   label="judged level")
    ax.set_xticks(x, ["clean", *(f"{v:g}" for v in levels)])
    name = claim.spec.level_name if claim.spec.level_name != "level" else "strength"
    ylabel = claim.spec.extra.get("ylabel") or (
        "rise over own clean score" if rise else "score (lower is better)")
    ax.set(xlabel=f"{name} (weakest first)", ylabel=ylabel,
           title=claim.spec.title or claim.spec.id)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save_figure(fig, path, bbox_inches="tight")


def claim_plots(claims: Sequence, rows: Sequence[dict], pdir: Path) -> dict[str, Path]:
    """One ladder plot per ladder claim; claim id -> path."""
    out = {}
    for c in claims:
        if c.spec.kind != "scalar" and c.primary.sample.key:
            p = ladder_plot(c, rows, pdir / f"ladder_{c.spec.id}.png")
            if p is not None:
                out[c.spec.id] = p
    return out
