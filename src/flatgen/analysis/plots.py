"""PNG plots of landscapes, perturbation curves, spectral densities and the second-order
check (matplotlib, Agg).

Figures are drawn with matplotlib's object API on an Agg canvas (flatgen.plotting), so importing
this module neither needs a display nor changes the pyplot backend of the caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flatgen.analysis.density import SpectralDensity
from flatgen.analysis.expansion import (
    DEFAULT_TOLERANCE,
    LAMBDA_MAX_PREDICTOR,
    QUALITY_RISE,
    expansion_regression,
    expansion_title,
)
from flatgen.analysis.landscape import Landscape
from flatgen.plotting import new_figure, save_figure


def plot_landscape(
    landscape: Landscape, path: str | os.PathLike, *, kind: str = "both", log: bool = False
) -> Path:
    """A 1-D landscape as a line; a 2-D one as a contour ("contour"), a 3-D surface
    ("surface"), or both side by side ("both"). log=True plots log10 of the loss."""
    z = np.log10(np.maximum(landscape.losses, 1e-12)) if log else landscape.losses
    label = "log10 loss" if log else "loss"
    if landscape.dim == 1:
        fig = new_figure((5, 3.5))
        ax = fig.subplots()
        ax.plot(landscape.coords[0], z, marker=".")
        ax.axvline(0.0, color="grey", lw=0.5)
        ax.set(xlabel="direction 1 (filter-normalized)", ylabel=label)
        return save_figure(fig, path, dpi=120, bbox_inches="tight")
    if kind not in ("contour", "surface", "both"):
        raise ValueError(f"kind must be 'contour', 'surface' or 'both', got {kind!r}")
    x, y = np.meshgrid(landscape.coords[0], landscape.coords[1], indexing="ij")
    panels = ["contour", "surface"] if kind == "both" else [kind]
    fig = new_figure((5.5 * len(panels), 4.5))
    for i, panel in enumerate(panels):
        if panel == "contour":
            ax = fig.add_subplot(1, len(panels), i + 1)
            cs = ax.contour(x, y, z, levels=20, cmap="viridis")
            ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
            ax.plot([0], [0], "r+")
            ax.set(xlabel="direction 1", ylabel="direction 2", aspect="equal")
        else:
            ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
            ax.plot_surface(x, y, z, cmap="viridis", linewidth=0, antialiased=True)
            ax.set(xlabel="direction 1", ylabel="direction 2", zlabel=label)
    fig.suptitle(f"loss landscape (loss at w = {landscape.loss0:.4g})")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _curve_panel(ax, curves: Mapping[str, Mapping], key: str, radius: str, title: str) -> None:
    for label, summary in curves.items():
        curve = summary.get(key)
        if not curve:
            continue
        r = np.asarray(curve[radius])
        inc = np.asarray(curve["increase"])
        line = ax.plot(r, inc, marker="o", label=label)[0]
        if "std" in curve:
            std = np.asarray(curve["std"])
            ax.fill_between(r, inc - std, inc + std, color=line.get_color(), alpha=0.2)
    ax.set(xlabel=radius, ylabel="loss increase", title=title)
    if len(curves) > 1:
        ax.legend(fontsize=7)


def _worst_case_title(summaries) -> str:
    """The ball the worst-case ascent searched (summary["worst_case"]["ball"])."""
    balls = {(sm.get("worst_case") or {}).get("ball") for sm in summaries} - {None}
    names = {"filter": "per-filter ball", "l2": "L2 ball"}
    return "worst case (" + " / ".join(names.get(b, f"{b} ball") for b in sorted(balls)) + ")" \
        if balls else "worst case"


def plot_perturbation(curves: Mapping[str, Mapping], path: str | os.PathLike) -> Path:
    """Loss increase vs radius for one or more sharpness summaries ({label: summary}).

    Left: worst case in the ball of radius rho its ascent searched (per-filter or L2); right:
    mean (+- std) under per-filter
    Gaussian noise of relative size sigma.
    """
    fig = new_figure((10, 3.8))
    axes = fig.subplots(1, 2)
    _curve_panel(axes[0], curves, "worst_case", "rho", _worst_case_title(curves.values()))
    _curve_panel(axes[1], curves, "average_case", "sigma", "Gaussian, per-filter scaled")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _density_panel(ax, density: Mapping, title: str) -> None:
    d = np.asarray(density["density"], dtype=float)
    floor = max(float(d.max()), 1e-300) * 1e-8  # log scale: show 8 decades below the peak
    ax.semilogy(density["grid"], np.maximum(d, floor))
    ax.set(xlabel="eigenvalue", ylabel="density", title=title)


def plot_density(density: SpectralDensity | Mapping, path: str | os.PathLike) -> Path:
    """The SLQ eigenvalue density on a log scale (the bulk and the outliers both show)."""
    if isinstance(density, SpectralDensity):
        density = density.to_dict()
    fig = new_figure((5.5, 3.8))
    ax = fig.subplots()
    _density_panel(ax, density, "Hessian spectral density (SLQ)")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_sharpness(summary: Mapping, path: str | os.PathLike) -> Path:
    """The panels a sharpness summary supports: perturbation curves and, if present, density."""
    has_density = bool(summary.get("density"))
    fig = new_figure((15 if has_density else 10, 3.8))
    axes = fig.subplots(1, 3 if has_density else 2)
    _curve_panel(axes[0], {"": summary}, "worst_case", "rho", _worst_case_title([summary]))
    _curve_panel(axes[1], {"": summary}, "average_case", "sigma", "Gaussian, per-filter scaled")
    if has_density:
        _density_panel(axes[2], summary["density"], "spectral density (SLQ)")
    lam = summary.get("lambda_max")
    if lam is not None:
        fig.suptitle(f"lambda_max = {lam:.4g}", y=1.03)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot_expansion(
    rows_by_model: Mapping[str, Sequence[Mapping]] | Sequence[Mapping],
    path: str | os.PathLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Path:
    """Predicted (g.delta + 0.5 delta.H.delta) against measured loss rise, from
    loss_rise_check rows ({model label: rows}, or one model's rows).

    Symlog axes (rises can be negative), the y = x line and the +-tolerance band; one colour
    per model, one marker per perturbation kind. The title says where the expansion holds.
    """
    if not isinstance(rows_by_model, Mapping):
        rows_by_model = {"": rows_by_model}
    all_rows = [r for rows in rows_by_model.values() for r in rows]
    values = np.array([abs(r[k]) for r in all_rows for k in ("measured", "predicted")], float)
    nonzero = values[values > 0]
    lin = float(nonzero.min()) if nonzero.size else 1e-8  # linear region below the smallest rise
    top = float(values.max()) * 2 if values.size and values.max() > 0 else 1.0
    kinds = list(dict.fromkeys(r["kind"] for r in all_rows))
    marker = {k: _MARKERS[i % len(_MARKERS)] for i, k in enumerate(kinds)}
    colours = {label: f"C{i % 10}" for i, label in enumerate(rows_by_model)}
    fig = new_figure((6, 5))
    ax = fig.subplots()
    for label, rows in rows_by_model.items():
        for kind in kinds:
            pts = [r for r in rows if r["kind"] == kind]
            if pts:
                ax.scatter(
                    [r["measured"] for r in pts], [r["predicted"] for r in pts],
                    marker=marker[kind], color=colours[label], alpha=0.8,
                )  # fmt: skip
    grid = np.concatenate([-np.geomspace(top, lin, 50), [0.0], np.geomspace(lin, top, 50)])
    ax.plot(grid, grid, color="black", lw=0.8, label="y = x")
    ax.fill_between(grid, grid * (1 - tolerance), grid * (1 + tolerance), color="grey",
                    alpha=0.15, label=f"±{tolerance:.0%}")  # fmt: skip
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_yscale("symlog", linthresh=lin)
    ax.set(xlabel="measured loss rise L(w+δ) - L(w)", ylabel="predicted g·δ + ½ δ·H·δ")
    ax.tick_params(labelsize=7)
    for kind in kinds:  # legend entries only: one per kind (grey), one per model (colour)
        ax.scatter([], [], color="grey", marker=marker[kind], label=kind)
    for label, colour in colours.items():
        if label:
            ax.scatter([], [], color=colour, marker="o", label=label)
    ax.legend(fontsize=7)
    ax.set_title(expansion_title(all_rows, tolerance=tolerance), fontsize=8)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _fit_label(name: str, fit: Mapping) -> str:
    if fit["r2"] is None:
        return f"{name}: no fit (n={fit['n']})"
    # least squares on the raw values, every model pooled: the largest rises dominate the fit,
    # so on log axes the line can miss the small ones
    return (f"{name}: slope {fit['slope']:.3g}, R² = {fit['r2']:.2f} "
            f"(pooled, n={fit['n']})")


def _fit_series(ax, xs, ys, fit: Mapping, *, name: str, colour: str, marker: str) -> None:
    ax.scatter(xs, ys, color=colour, marker=marker, alpha=0.8, label=_fit_label(name, fit))
    if fit["slope"] is not None:
        grid = np.linspace(min(0.0, min(xs)), max(xs), 200)
        ax.plot(grid, fit["slope"] * grid + fit["intercept"], color=colour, lw=1.2)


def _symlog(ax, values: Sequence[float]) -> None:
    nonzero = np.abs(np.asarray(values, float))
    nonzero = nonzero[nonzero > 0]
    lin = float(nonzero.min()) if nonzero.size else 1e-8
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_yscale("symlog", linthresh=lin)


def expansion_regression_figure(rows: Sequence[Mapping] | Mapping[str, Sequence[Mapping]]):
    """The figure of plot_expansion_regression (a matplotlib Figure, not saved)."""
    if isinstance(rows, Mapping):
        rows = [r for model_rows in rows.values() for r in model_rows]
    rows = list(rows)
    reg = expansion_regression(rows)
    panels = 2 if reg["quality"] else 1
    fig = new_figure((6.2 * panels, 5.6))
    axes = np.atleast_1d(fig.subplots(1, panels))
    ax = axes[0]
    measured = [r["measured"] for r in rows]
    _fit_series(ax, [r["predicted"] for r in rows], measured, reg["second_order"],
                name="g·δ + ½δᵀHδ", colour="C0", marker="o")  # fmt: skip
    shown = measured + [r["predicted"] for r in rows]
    if reg["lambda_max"]:
        lam = [r for r in rows if LAMBDA_MAX_PREDICTOR in r]
        xs = [r[LAMBDA_MAX_PREDICTOR] for r in lam]
        _fit_series(ax, xs, [r["measured"] for r in lam], reg["lambda_max"],
                    name="λmax‖δ‖²", colour="C3", marker="^")  # fmt: skip
        shown += xs
    _symlog(ax, shown)
    ax.set_xlabel("predictor (loss units)", fontsize=11)
    ax.set_ylabel("measured loss rise L(w+δ) − L(w)", fontsize=11)
    ax.set_title("what predicts the loss rise", fontsize=12)
    if reg["quality"]:
        q = [r for r in rows if r.get(QUALITY_RISE) is not None]
        _fit_series(axes[1], [r["measured"] for r in q], [r[QUALITY_RISE] for r in q],
                    reg["quality"], name="quality on loss", colour="C2", marker="s")
        axes[1].set_xlabel("measured loss rise", fontsize=11)
        axes[1].set_ylabel("quality rise (e.g. dFID)", fontsize=11)
        axes[1].set_title("does the loss rise predict the quality rise?", fontsize=12)
    for a in axes:  # legends below the axes, outside the data
        a.tick_params(labelsize=9)
        a.tick_params(axis="x", labelrotation=45)  # symlog ticks around 0 would collide
        a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=9, frameon=False)
    return fig


def plot_expansion_regression(
    rows: Sequence[Mapping] | Mapping[str, Sequence[Mapping]], path: str | os.PathLike
) -> Path:
    """The measured loss rise against what lambda_max alone predicts (lambda_max ||delta||^2)
    and against the full second-order prediction, each with its least-squares line and R^2
    (analysis.expansion.expansion_regression); beside it, where rows carry a quality rise, the
    quality rise on the loss rise. Rows of several models ({label: rows}) are pooled."""
    return save_figure(expansion_regression_figure(rows), path, dpi=120, bbox_inches="tight")
