"""PNG plots of run_robustness_suite results, one curve per weights choice (raw / EMA / SWA).

Each suite's plot() calls one function here with the whole suite output."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flatgen.io import atomic_write

_STYLES = ("-", "--", ":", "-.")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def metric_value(quality: Any, metric: str) -> float | None:
    """One metric from a quality dict (a bare number is taken as is)."""
    return quality.get(metric) if isinstance(quality, Mapping) else quality


def _color(i: int) -> str:
    return f"C{i % 10}"


def _curve(ax: Axes, x: Any, y: Any, model: int, series: int, label: str, marker: str) -> None:
    """One curve of a per-model family: the colour tells the model (its index in the results),
    the line style the series within that model (sampler, timestep, granularity, ...)."""
    ax.plot(x, y, _STYLES[series % len(_STYLES)], marker=marker, color=_color(model), label=label)


def plot_steps(results: Mapping[str, Any], path: Path) -> Path:
    metric = results["metric"]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for i, (name, per_sampler) in enumerate(results["steps"].items()):
        for j, (sampler, rows) in enumerate(per_sampler.items()):
            y = [metric_value(q, metric) for q in rows["quality"]]
            _curve(ax, rows["steps"], y, i, j, f"{name} ({sampler})", "o")
    ax.set(xscale="log", xlabel="sampling steps T'", ylabel=metric, title="quality vs steps")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_exposure(results: Mapping[str, Any], path: Path) -> Path:
    """Relative eps-norm gap per t (l2: solid, squared: dashed; grey: the sampler alone, closed
    form), and the variance error delta_t."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (name, exp) in enumerate(results["exposure"].items()):
        for j, (steps, gap) in enumerate(exp["eps_norm_gap"].items()):
            for k, form in enumerate(("l2", "sq")):
                label = f"{name} T'={steps} ({form})"
                _curve(ax1, gap[form]["t"], gap[form]["relative_gap"], i, 2 * j + k, label, ".")
                if i == 0:
                    only = exp["sampler_only"][steps][form]
                    ax1.plot(only["t"], only["relative_gap"], _STYLES[(2 * j + k) % 4],
                             color="grey", lw=0.8, label=f"sampler only T'={steps} ({form})")
        for j, (key, v) in enumerate(exp["variance_error"].items()):
            _curve(ax2, v["t"], v["delta"], i, j, f"{name} ({key})", ".")
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set(xlabel="timestep t", ylabel="(sampling - training) / training",
            title="epsilon-norm gap")
    ax2.set(xlabel="timestep t", ylabel="delta_t", yscale="log", title="variance error")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_quant(results: Mapping[str, Any], path: Path) -> Path:
    metric = results["metric"]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for i, (name, per_gran) in enumerate(results["quant"].items()):
        base = metric_value(per_gran["float"], metric)
        ax.axhline(base, color=_color(i), lw=0.5)
        grans = [(k, v) for k, v in per_gran.items() if k not in ("float", "select_float")]
        for j, (gran, sweep) in enumerate(grans):
            if "quality" in sweep:
                y = [metric_value(q, metric) for q in sweep["quality"]]
                _curve(ax, sweep["bits"], y, i, j, f"{name} ({gran})", "o")
            if "quality_act" in sweep:  # activations quantized too: the style two along
                ya = [metric_value(q, metric) for q in sweep["quality_act"]]
                _curve(ax, sweep["bits"], ya, i, j + 2, f"{name} ({gran}, W+A)", "x")
    ax.set(xlabel="weight bits", ylabel=metric, title="quality vs bits (thin: float)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_attack(results: Mapping[str, Any], path: Path) -> Path:
    """Top: the x_t attack's loss (consistent target) per eps; bottom: quality under the x_T
    attack. Dotted: the selection stream, where measured."""
    per_model = results["attack"]
    norms = list(next(iter(per_model.values()))["initial_noise"])
    fig = Figure(figsize=(5 * len(norms), 8))
    for k, norm in enumerate(norms):
        ax1 = fig.add_subplot(2, len(norms), k + 1)
        ax2 = fig.add_subplot(2, len(norms), len(norms) + k + 1)
        for i, (name, att) in enumerate(per_model.items()):
            for j, (t, rec) in enumerate(att["denoiser_input"][norm].items()):
                _curve(ax1, [0, *rec["levels"]], [rec["clean"], *rec["values"]], i, j,
                       f"{name} t={t}", "o")
            rec = att["initial_noise"][norm]
            _curve(ax2, [0, *rec["levels"]], [rec["clean"], *rec["values"]], i, 0, name, "o")
            if rec["select_values"] is not None:
                _curve(ax2, [0, *rec["levels"]], [rec["select_clean"], *rec["select_values"]],
                       i, 2, f"{name} (selection)", ".")
        ax1.set(xlabel=f"epsilon ({norm}, data range)", ylabel="denoising loss (consistent target)",
                title=f"PGD on x_t ({norm})")
        ax2.set(xlabel=f"epsilon ({norm})", ylabel=results["metric"] or "quality",
                title=f"PGD on x_T through DDIM ({norm})")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_noise(results: Mapping[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    draws = 0
    for i, (name, rec) in enumerate(results["noise"].items()):
        draws = rec["extra"]["draws"]
        ax.errorbar([0, *rec["levels"]], [rec["clean"], *rec["values"]],
                    yerr=[0.0, *rec["extra"]["std"]], marker="o", color=_color(i), capsize=3,
                    label=name)
    ax.set(
        xlabel="relative weight noise sigma (filter-normalized)",
        ylabel=results["metric"] or "quality",
        title=f"quality vs weight noise ({draws} draws)",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)
