"""Sharpness over training: lambda_max and the Hessian trace of every kept checkpoint.

Reads the checkpoint history `RUN/checkpoints/step-<n>/` (weights as safetensors) and measures
each on the same fixed (x0, t, noise) batch, so the curve shows how training moved the weights
into flatter or sharper regions, not how the batch changed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from flatgen.progress import make_progress
from flatgen.train.run import Run

STEP_DIR = re.compile(r"^step-(\d+)$")
_FILE_FOR = {"raw": "model", "ema": "ema", "swa": "swa"}


def checkpoint_history(run_dir: str | Path, weights: str = "raw") -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoints/step-<n> holding `weights`, by step."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for folder in root.glob("step-*") if root.is_dir() else []:
        match = STEP_DIR.match(folder.name)
        if match and (folder / f"{_FILE_FOR[weights]}.safetensors").is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def sharpness_history(
    run: Run,
    out_dir: Path,
    *,
    weights: str = "raw",
    batch: int = 256,
    top_k: int = 1,
    trace_matvecs: int = 30,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write sharpness_history.json and .png into out_dir; returns their paths. A progress bar
    counts the checkpoints measured (each one's Lanczos and trace products as its stage)."""
    from flatgen.analysis import HessianOperator, hessian_eigenvalues, hessian_trace
    from flatgen.flatness import sharpness_loss_fn
    from flatgen.io import write_json_atomic
    from flatgen.models import model_from_config
    from flatgen.train.checkpoint import load_weights

    history = checkpoint_history(run.path, weights)
    if not history:
        raise ValueError(f"run {str(run.path)!r} keeps no checkpoints/step-<n> with {weights!r} "
                         "weights: train with a checkpoint history to use --all-checkpoints")
    loss_fn = sharpness_loss_fn(run, batch)
    rows: list[dict[str, Any]] = []
    with make_progress(progress, fields="{task.fields[stage]}") as bar:
        task = bar.add_task("checkpoints", total=len(history), stage="") if bar else None

        def stage(name: str):  # the current checkpoint's Hessian products, as a text field
            def update(done: int, total: int) -> None:
                if bar:
                    bar.update(task, stage=f"{name} {done}/{total}")
            return update

        for i, (step, folder) in enumerate(history):
            model = model_from_config(run.cfg.model, run.sample_shape())
            model.load_state_dict(load_weights(folder, _FILE_FOR[weights]))
            model.eval()
            # one gradient graph per checkpoint serves both Lanczos and the trace
            with HessianOperator(model, loss_fn) as op:
                eig = hessian_eigenvalues(model, loss_fn, k=top_k, operator=op,
                                          progress=stage(f"step {step}: eigenvalues"))
                trace = hessian_trace(model, loss_fn, n_matvecs=trace_matvecs, operator=op,
                                      progress=stage(f"step {step}: trace"))
            with torch.no_grad():
                loss = float(loss_fn(model))
            rows.append({"step": step, "loss": loss,
                         "lambda_max": float(eig.vals[0]), "top_k": [float(v) for v in eig.vals],
                         "trace": float(trace), "trace_stderr": float(trace.stderr)})
            if bar:
                bar.update(task, completed=i + 1)
    result = {"weights": weights, "batch": batch, "checkpoints": rows}
    path = write_json_atomic(out_dir / "sharpness_history.json", result)
    return path, plot_history(result, out_dir / "sharpness_history.png")


def plot_history(result: dict[str, Any], path: Path) -> Path:
    from flatgen.plotting import new_figure, save_figure

    rows = result["checkpoints"]
    steps = [r["step"] for r in rows]
    fig = new_figure((9, 3.2))
    a, b = fig.subplots(1, 2)
    a.plot(steps, [r["lambda_max"] for r in rows], marker="o")
    a.set_ylabel("λmax")
    b.errorbar(steps, [r["trace"] for r in rows], yerr=[r["trace_stderr"] for r in rows],
               marker="o", capsize=3)
    b.set_ylabel("Hessian trace")
    for ax in (a, b):
        ax.set_xlabel("training step")
    fig.suptitle(f"sharpness over training ({result['weights']} weights)")
    return save_figure(fig, path, dpi=100)
