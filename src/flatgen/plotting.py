"""Every figure flatgen writes: the one saver, object-API figures, pyplot on Agg, and pictures of
samples (a PNG grid for images, a scatter for 2-D points).

A low module: analysis/, dro/, train/, classify/ and report/ all draw through it. Importing it
neither needs a display nor changes the pyplot backend; `pyplot()` sets Agg when asked.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flatgen.io import atomic_write

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from PIL import Image


# one colour and marker per method in every figure of a report (the study's usual methods first;
# any other method takes the next free colour in the order it is first drawn)
_METHOD_ORDER = ("adm", "ema", "sam", "sam+ema", "swa", "sam+swa")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def method_style(method: str, *, seen: list[str] | None = None) -> dict[str, str]:
    """{"color", "marker"} of a method: fixed for the usual ones, the same in every figure."""
    if method in _METHOD_ORDER:
        i = _METHOD_ORDER.index(method)
    else:
        others = [m for m in (seen or []) if m not in _METHOD_ORDER]
        i = len(_METHOD_ORDER) + (others.index(method) if method in others else len(others))
    return {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)]}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(figsize: tuple[float, float]) -> Figure:
    """An empty Figure on an Agg canvas, outside pyplot's state (nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110,
                bbox_inches: str | None = None) -> Path:
    """Write fig as a PNG atomically (a crash leaves no half file) and release it.

    The layout is tightened first; bbox_inches="tight" also crops to what was drawn (legends
    placed outside the axes)."""
    fig.tight_layout()
    path = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi,
                                                    bbox_inches=bbox_inches))
    if "matplotlib.pyplot" in sys.modules:  # a pyplot figure stays open until closed
        sys.modules["matplotlib.pyplot"].close(fig)
    return path


def image_grid(
    x: torch.Tensor, *, nrow: int | None = None, scale: int = 4, pad: int = 1
) -> Image.Image:
    """Tile N x C x H x W images in [-1, 1] into one PIL image, upscaled by `scale` (nearest)."""
    import torch
    from PIL import Image

    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = pixels[i].transpose(1, 2, 0)
    image = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def save_samples_png(
    x: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None
) -> Path:
    """Write samples as a PNG: an image grid, or for 2-D points a scatter (over the reference)."""
    if x.ndim == 4:
        scale = max(1, 64 // x.shape[-1])
        return atomic_write(path, lambda p: image_grid(x, scale=scale).save(p, format="PNG"))
    fig = new_figure((5, 5))
    ax = fig.subplots()
    if reference is not None:
        ax.scatter(*reference[:, :2].T.cpu(), s=2, alpha=0.3, c="gray", label="data")
    ax.scatter(*x[:, :2].T.cpu(), s=2, alpha=0.6, label="samples")
    ax.legend(loc="upper right")
    ax.set_aspect("equal")
    return save_figure(fig, path, dpi=100)


__all__ = ["image_grid", "method_style", "new_figure", "pyplot", "save_figure",
           "save_samples_png"]
