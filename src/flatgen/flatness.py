"""Flatness of a trained run as `flatgen sharpness` and `flatgen landscape` report it: the
Hessian summary and the loss landscape on the study's fixed batch, written next to the run.

The loss is sharpness_loss_fn (defined here, below the study engine that also uses it), the one
a study measures every method on, so a command-line number and a study's number for the same run
agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flatgen.diffusion import fixed_diffusion_loss_fn
from flatgen.io import write_json_atomic
from flatgen.metrics import train_floor_sample
from flatgen.progress import make_progress
from flatgen.train.run import Run

SHARPNESS_SEED = 0


def sharpness_loss_fn(run: Run, batch: int, *, seed: int = SHARPNESS_SEED):
    """The fixed-data diffusion loss every method's flatness is measured on (same data, t and
    noise for every model measured with this seed)."""
    train, _ = run.data()
    x0 = train_floor_sample(train, min(batch, len(train)), seed=seed)
    return fixed_diffusion_loss_fn(x0, run.schedule, draws=1, seed=seed)


def sharpness_report(
    run: Run,
    out_dir: Path,
    *,
    weights: str = "raw",
    batch: int = 256,
    top_k: int = 5,
    trace: bool = True,
    density: bool = False,
    per_layer: bool = False,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    sigmas: Sequence[float] = (0.01, 0.05, 0.1),
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """flatgen.analysis.sharpness_summary of the run's `weights` on `batch` fixed (x0, t, noise)
    triples, written to out_dir/sharpness.json and sharpness.png; (summary, json path)."""
    from flatgen.analysis import plot_sharpness, sharpness_summary

    model = run.model(weights)
    loss_fn = sharpness_loss_fn(run, batch)
    with make_progress(progress, fields="{task.fields[stage]}") as bar:
        task = bar.add_task("sharpness", total=None, stage="") if bar else None

        def on_progress(stage: str, done: int, total: int) -> None:
            if bar:
                bar.update(task, completed=done, total=total, stage=stage)

        summary = sharpness_summary(
            model, loss_fn, top_k=top_k, trace=trace, density=density, per_layer=per_layer,
            rhos=list(rhos), sigmas=list(sigmas), progress=on_progress,
        )
    summary |= {"weights": weights, "batch": batch}
    path = write_json_atomic(Path(out_dir) / "sharpness.json", summary)
    plot_sharpness(summary, Path(out_dir) / "sharpness.png")
    return summary, path


def landscape_report(
    run: Run,
    out_dir: Path,
    *,
    weights: str = "raw",
    batch: int = 256,
    dim: int = 2,
    grid: int = 21,
    span: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Any, Path, Path]:
    """The loss along `dim` filter-normalized random directions (Li et al. 2018), written to
    out_dir/landscape.npz and landscape.png; (Landscape, npz path, png path)."""
    from flatgen.analysis import loss_landscape, plot_landscape, save_landscape

    if span <= 0:
        raise ValueError(f"--span must be > 0, got {span}")
    model = run.model(weights)
    loss_fn = sharpness_loss_fn(run, batch)
    with make_progress(progress) as bar:
        task = bar.add_task("landscape", total=grid**dim) if bar else None

        def on_progress(done: int, total: int) -> None:
            if bar:
                bar.update(task, completed=done, total=total)

        result = loss_landscape(model, loss_fn, dim=dim, grid=grid, span=span, seed=seed,
                                progress=on_progress)
    npz = save_landscape(result, Path(out_dir) / "landscape.npz")
    png = plot_landscape(result, Path(out_dir) / "landscape.png")
    return result, npz, png
