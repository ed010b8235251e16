"""matplotlib set up once (Agg, no display) and the one figure saver of the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flatgen.io import atomic_write  # noqa: E402


def save_figure(fig, path: Path, *, dpi: int = 110) -> Path:
    """Write fig as a PNG atomically (a crash leaves no half file) and close it."""
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    plt.close(fig)
    return Path(path)


__all__ = ["plt", "save_figure"]
