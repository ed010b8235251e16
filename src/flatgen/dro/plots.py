"""Plots for the DRO-game comparison (matplotlib Figure objects, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flatgen.plotting import save_figure

COLORS = {
    "game": "tab:red",
    "minw": "tab:blue",
    "wgan_gp": "tab:green",
    "ns_gan": "tab:purple",
    "data": "black",
}


def plot_w2_curves(datasets: dict[str, dict], path: Path) -> None:
    """W2 to held-out data vs iteration: mean over seeds, band = min..max, one panel per dataset.

    datasets[label] = {"reference": float, "methods": {method: {"iters": [...], "w2": [[...]]}}}
    """
    fig = Figure(figsize=(5.0 * len(datasets), 3.8))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, (label, d) in zip(axes, datasets.items(), strict=True):
        for method, m in d["methods"].items():
            w2 = np.asarray(m["w2"], dtype=float)
            color = COLORS.get(method)
            ax.plot(m["iters"], w2.mean(0), color=color, label=f"{method} ({len(w2)} seeds)")
            ax.fill_between(m["iters"], w2.min(0), w2.max(0), color=color, alpha=0.2)
        ax.axhline(d["reference"], color="gray", ls="--", lw=1, label="train subset vs test")
        ax.set_yscale("log")
        ax.set_xlabel("generator iteration")
        ax.set_ylabel("W2 to held-out data")
        ax.set_title(label)
        ax.legend(fontsize=8)
    save_figure(fig, path, bbox_inches="tight")


def plot_samples_2d(samples: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Scatter of 2-D samples, one panel per source (held-out data first)."""
    fig = Figure(figsize=(3.2 * len(samples), 3.3))
    axes = fig.subplots(1, len(samples), squeeze=False)[0]
    lim = max(float(np.abs(s).max()) for s in samples.values())
    lim = min(lim, 4 * float(np.abs(next(iter(samples.values()))).max())) * 1.05
    for ax, (name, pts) in zip(axes, samples.items(), strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=COLORS.get(name, "black"))
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    save_figure(fig, path, bbox_inches="tight")


def _grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), -1.0)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = im
    return out


def plot_image_grids(samples: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Grids of 64 grayscale images in [-1, 1] (N x H x W), one panel per source."""
    fig = Figure(figsize=(3.2 * len(samples), 3.5))
    axes = fig.subplots(1, len(samples), squeeze=False)[0]
    for ax, (name, imgs) in zip(axes, samples.items(), strict=True):
        ax.imshow(_grid(np.clip(imgs[:64], -1, 1)), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    save_figure(fig, path, bbox_inches="tight")
