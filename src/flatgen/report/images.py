"""Pictures of samples: a PNG grid for images, a scatter plot for 2-D points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flatgen.io import atomic_write


def image_grid(
    x: torch.Tensor, *, nrow: int | None = None, scale: int = 4, pad: int = 1
) -> Image.Image:
    """Tile N x C x H x W images in [-1, 1] into one PIL image, upscaled by `scale` (nearest)."""
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
    from flatgen.report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(5, 5))
    if reference is not None:
        ax.scatter(*reference[:, :2].T.cpu(), s=2, alpha=0.3, c="gray", label="data")
    ax.scatter(*x[:, :2].T.cpu(), s=2, alpha=0.6, label="samples")
    ax.legend(loc="upper right")
    ax.set_aspect("equal")
    return save_figure(fig, Path(path), dpi=100)
