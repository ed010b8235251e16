"""The study's figures (matplotlib, Agg): one curve or bar per method, error bars over seeds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker

from flatgen.plotting import image_grid, pyplot, save_figure
from flatgen.report.stats import mean_std
from flatgen.report.tables import QUALITY_TITLES, quality_metric, robustness_metric
from flatgen.study.config import StudyConfig

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
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m, (xs, mean, std) in curves.items():
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=m)
    if logx:  # ticks at the measured x values, written plainly (not 3x10^-1)
        ax.set_xscale("log")
        ax.set_xticks(sorted({x for xs, _, _ in curves.values() for x in xs}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _detail(r: dict, suite: str) -> Any:
    detail = r["metrics"].get("robustness_detail") or {}
    return (detail.get(suite) or {}).get(r["weights"])


def _metric_of(q: Any, metric: str) -> float | None:
    return q.get(metric) if isinstance(q, dict) else q


def study_plots(
    rows: Sequence[dict],
    methods: Sequence[str],
    study: StudyConfig,
    *,
    out: Path,
    samples: bool = True,
) -> dict[str, Path]:
    """Write every figure the measurements allow into out/plots; name -> path."""
    pdir = out / "plots"
    metric = robustness_metric(rows)
    plots: dict[str, Path | None] = {}
    steps = study.evaluations.quality_steps
    qmetric = quality_metric(rows)

    def quality_vs_steps(r):
        ys = [r["metrics"].get(f"{qmetric}@T{k}") for k in steps]
        return (steps, ys) if all(y is not None for y in ys) else None

    plots["quality_vs_steps"] = _line_plot(
        _curves(rows, methods, quality_vs_steps),
        pdir / "quality_vs_steps.png",
        "sampling steps T'",
        f"{QUALITY_TITLES.get(qmetric, qmetric)} to test set (lower is better)",
        "Quality vs sampling steps",
        logx=True,
    )

    def vs_bits(r):
        d = _detail(r, "quant")
        if not d or "channel" not in d:
            return None
        bits = d["channel"]["bits"]
        return (
            [32] + bits,
            [_metric_of(d["float"], metric)]
            + [_metric_of(q, metric) for q in d["channel"]["quality"]],
        )

    plots["quality_vs_bits"] = _line_plot(
        _curves(rows, methods, vs_bits),
        pdir / "quality_vs_bits.png",
        "weight bits (32 = float)",
        f"{QUALITY_TITLES.get(metric, metric)} (lower is better)",
        "Quality under weight quantization (per-channel RTN)",
        logx=True,
    )

    def vs_eps(r):
        d = _detail(r, "attack")
        if not d:
            return None
        linf = d["denoiser_input"].get("linf") or {}
        if not linf:
            return None
        rec = linf[sorted(linf, key=int)[-1]]  # a ladder record (flatgen.ladder)
        return ([0.0, *rec["levels"]], [0.0, *(v / rec["clean"] - 1 for v in rec["values"])])

    plots["attack_vs_eps"] = _line_plot(
        _curves(rows, methods, vs_eps),
        pdir / "attack_vs_eps.png",
        "PGD L∞ epsilon on x_t",
        "relative increase of denoising loss",
        "Adversarial perturbation of the denoiser input",
    )

    def vs_sigma(r):
        d = _detail(r, "noise")
        return ([0.0, *d["levels"]], [d["clean"], *d["values"]]) if d else None  # a record

    plots["quality_vs_weight_noise"] = _line_plot(
        _curves(rows, methods, vs_sigma),
        pdir / "quality_vs_weight_noise.png",
        "filter-normalized weight-noise σ",
        f"{QUALITY_TITLES.get(metric, metric)} (lower is better)",
        "Quality under Gaussian weight noise",
    )

    def perturbation(key: str, radius: str):
        def extract(r):
            curve = (r["metrics"].get("perturbation_detail") or {}).get(key)
            return (curve[radius], curve["increase"]) if curve else None

        return extract

    plots["loss_vs_worst_perturbation"] = _line_plot(
        _curves(rows, methods, perturbation("worst_case", "rho")),
        pdir / "loss_vs_worst_perturbation.png",
        "per-filter radius ρ (||δ_f|| ≤ ρ ||w_f||)",
        "worst-case training-loss increase",
        "Loss under worst-case weight perturbation",
        logx=True,
    )
    plots["loss_vs_random_perturbation"] = _line_plot(
        _curves(rows, methods, perturbation("average_case", "sigma")),
        pdir / "loss_vs_random_perturbation.png",
        "filter-normalized weight-noise σ",
        "mean training-loss increase",
        "Loss under random weight perturbation",
        logx=True,
    )

    lam = {
        m: [
            r["metrics"]["lambda_max"]
            for r in rows
            if r["method"] == m and "lambda_max" in r["metrics"]
        ]
        for m in methods
    }
    lam = {m: v for m, v in lam.items() if v}
    if lam:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        stats = [mean_std(v) for v in lam.values()]
        ax.bar(
            list(lam),
            [s[0] for s in stats],
            yerr=[s[1] for s in stats],
            capsize=4,
            color="tab:blue",
        )
        ax.set(
            ylabel="top Hessian eigenvalue λmax", title="Sharpness per method (lower is flatter)"
        )
        ax.grid(alpha=0.3, axis="y")
        plots["lambda_max"] = save_figure(fig, pdir / "lambda_max.png")

    plots["expansion"] = _expansion_plot(rows, methods, pdir)
    plots["loss_curve"] = _loss_curves(rows, out, pdir)
    if samples:
        plots |= _sample_grids(rows, methods, study, out, pdir)
    return {k: v for k, v in plots.items() if v is not None}


def _expansion_plot(rows: Sequence[dict], methods: Sequence[str], pdir: Path) -> Path | None:
    """Predicted vs measured loss rise of every weight perturbation, one colour per method."""
    from flatgen.analysis.plots import plot_expansion

    by_method = {m: [e for r in rows if r["method"] == m
                     for e in r["metrics"].get("expansion") or []]
                 for m in methods}
    by_method = {m: v for m, v in by_method.items() if v}
    return plot_expansion(by_method, pdir / "expansion.png") if by_method else None


def _loss_curves(rows: Sequence[dict], out: Path, pdir: Path) -> Path | None:
    """The training loss of each trained run (one line per base trajectory and seed)."""
    runs = sorted({(r["base"], r["seed"]) for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colours = {b: f"C{i}" for i, b in enumerate(sorted({b for b, _ in runs}))}
    drawn = set()
    for base, seed in runs:
        path = out / "runs" / f"{base}-s{seed}" / "metrics.jsonl"
        if not path.is_file():
            continue
        log = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        log = [e for e in log if isinstance(e.get("loss"), (int, float))]
        if not log:
            continue
        ax.plot([e["step"] for e in log], [e["loss"] for e in log], color=colours[base],
                alpha=0.7, lw=1, label=None if base in drawn else base)
        drawn.add(base)
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="training step", ylabel="training loss (logged window mean)", yscale="log",
           title="Training loss per run")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, pdir / "loss_curve.png")


def _sample_grids(rows, methods, study: StudyConfig, out: Path, pdir: Path) -> dict[str, Path]:
    """A 6x6 grid per method (first seed, T'=min steps) in one figure."""
    from flatgen.diffusion import generate
    from flatgen.train import load_run

    steps = min(study.evaluations.quality_steps)
    seed = study.seeds[0]
    grids = []
    for m in methods:
        r = next((r for r in rows if r["method"] == m and r["seed"] == seed), None)
        if r is None:
            continue
        run = load_run(out / "runs" / f"{r['base']}-s{seed}")
        _, test = run.data()
        if test.ndim != 4:
            continue
        x = generate(
            run.model(r["weights"]),
            run.schedule,
            n=36,
            shape=tuple(test.shape[1:]),
            steps=steps,
            sampler=study.evaluations.sampler,
            seed=0,
        )
        grids.append((m, image_grid(x, nrow=6, scale=4)))
    if not grids:
        return {}
    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 2.9))
    for ax, (m, img) in zip(axes if len(grids) > 1 else [axes], grids, strict=True):
        ax.imshow(img, cmap="gray")
        ax.set_title(m, fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"Samples, {study.evaluations.sampler} sampler, T'={steps} (same noise for every method)",
        fontsize=9,
    )
    return {"samples": save_figure(fig, pdir / "samples.png")}


def _ladder_means(rows: Sequence[dict], method: str, key: str, field: str = "values"):
    """(levels, mean over seeds per level) of one ladder, or None."""
    recs = [
        rec
        for r in rows
        if r["method"] == method
        and isinstance(rec := (r["metrics"].get("ladders") or {}).get(key), dict)
        and rec.get(field) is not None
    ]
    if not recs:
        return None
    levels = recs[0]["levels"]
    means = [
        mean_std([v for rec in recs if (v := rec[field][i]) is not None and math.isfinite(v)])[0]
        for i in range(len(levels))
    ]
    return levels, means


def ladder_plot(claim, rows: Sequence[dict], path: Path) -> Path | None:
    """Score vs level per method (mean over seeds) on the claim's deciding ladder, with the
    baseline's selection ladder dotted and the judged level or the shared threshold marked."""
    s = claim.primary.sample
    methods = list(
        dict.fromkeys(
            [
                s.a,
                s.b,
                *(c.sample.a for c in claim.supporting),
                *(c.sample.b for c in claim.supporting),
            ]
        )
    )
    curves = {m: c for m in methods if (c := _ladder_means(rows, m, s.key))}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    levels = next(iter(curves.values()))[0]
    x = list(range(len(levels)))  # positions: levels run weakest first, on any scale
    for m, (lv, means) in curves.items():
        if list(lv) == list(levels):
            ax.plot(x, means, marker="o", label=m)
    sel = _ladder_means(rows, s.b, s.key, "select_values")
    if sel and list(sel[0]) == list(levels):
        ax.plot(x, sel[1], ls=":", color="gray", label=f"{s.b} (selection noise)")
    if s.tau is not None:
        ax.axhline(s.tau, color="tab:red", ls="--", lw=1, label=f"threshold τ={s.tau:.3g}")
    if s.level is not None and s.level in levels:
        ax.axvline(levels.index(s.level), color="tab:red", ls="--", lw=1, label="judged level")
    ax.set_xticks(x, [f"{v:g}" for v in levels])
    ax.set(
        xlabel=f"{s.key} level (weakest first)",
        ylabel="score (lower is better)",
        title=claim.spec.id,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def claim_plots(claims: Sequence, rows: Sequence[dict], pdir: Path) -> dict[str, Path]:
    """One ladder plot per ladder claim; claim id -> path."""
    out = {}
    for c in claims:
        if c.spec.kind != "scalar" and c.primary.sample.key:
            p = ladder_plot(c, rows, pdir / f"ladder_{c.spec.id}.png")
            if p is not None:
                out[c.spec.id] = p
    return out
