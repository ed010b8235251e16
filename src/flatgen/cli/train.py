"""flatgen train, sample, export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flatgen.cli.common import (
    _str_list,
    app,
    cli_command,
    console,
)
from flatgen.errors import InputError


@app.command()
@cli_command
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run directory (default runs/<config name>).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override: key.sub=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint "
        "(from step 0 if it has none).")] = False,
    resume_from: Annotated[int | None, typer.Option(
        "--resume-from", min=0, help="Continue from the checkpoint of this step "
        "(checkpoints/step-N); later ones are discarded.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Start over in --out even if it holds a run or other files.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; writes config.yaml, metrics.jsonl and checkpoints/ into the run directory.

    Checkpoints: checkpoints/step-<n> (the last train.keep_checkpoints of them) and
    checkpoints/last. A non-finite loss stops training with exit code 1, keeping the last
    finite checkpoint.
    """
    from contextlib import nullcontext

    from flatgen.config import load_config
    from flatgen.train import train as run_training
    from flatgen.train.loop import LOSS_WINDOW
    from flatgen.train.rundir import dry_build, plan_run, run_lock

    out = out or Path("runs") / config.stem
    overrides = list(set_ or [])
    resuming = resume or resume_from is not None
    if resuming and (out / "config.yaml").is_file():  # the run's own config, plus overrides
        cfg = load_config(out / "config.yaml", overrides, fix="restore the run's own config.yaml")
    else:
        cfg = load_config(config, overrides)
    # every check before the run directory is made or locked: the output, the resume state...
    plan = plan_run(cfg, out, resume=resume, resume_from=resume_from, force=force)
    if not plan.finished:  # ...and a model that cannot take the data's shape
        dry_build(cfg)
    # one writer per run directory (under torchrun / accelerate launch, rank 0 holds the lock)
    main_process = int(os.environ.get("RANK", "0")) == 0
    with run_lock(out) if main_process else nullcontext():
        result = run_training(
            cfg, out, resume=resume, resume_from=resume_from, force=force, progress=progress,
            notify=lambda text: console.print(text, soft_wrap=True, highlight=False))
    import torch.distributed as dist

    # under torchrun: exiting with a live gloo group can abort at teardown
    if dist.is_initialized():
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch: rank 0 reports
        return
    if plan.finished:  # --resume of a run that had already reached its steps
        console.print(f"{out} had already finished its {cfg.train.steps} steps: nothing was "
                      "trained (extend it with --resume --set train.steps=N)", soft_wrap=True)
    title = "finished run" if plan.finished else "trained"
    table = Table(title=f"{title} {cfg.method.name} on {cfg.data.name}", show_header=False)
    table.add_row("run directory", str(out))
    table.add_row("steps", f"{result.steps} / {cfg.train.steps}")
    window = min(LOSS_WINDOW, result.steps)  # a run shorter than the window averages them all
    table.add_row(f"final loss (mean of last {window} steps)", f"{result.final_loss:.4f}")
    table.add_row("time", f"{result.seconds:.1f} s ({result.it_per_s:.2f} it/s)")
    console.print(table)
    if result.steps < cfg.train.steps:
        console.print(f"interrupted: continue with  flatgen train {config} --out {out} --resume")
        raise typer.Exit(130)  # the shell's code for "stopped by Ctrl-C", so scripts can tell


# ---------------------------------------------------------------- sample


@app.command()
@cli_command
def sample(
    run_dir: Annotated[Path, typer.Argument(
        help="Run directory written by flatgen train, or a diffusers pipeline / UNet directory.")],
    steps: Annotated[int, typer.Option(help="Sampling steps T'.", min=1, max=100_000)] = 20,
    n: Annotated[int, typer.Option(help="Number of samples.", min=1, max=100_000)] = 64,
    sampler: Annotated[str, typer.Option(
        help="adm (stochastic, respaced) or ddim (eta=0).")] = "adm",
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    seed: Annotated[int, typer.Option(help="Sampling seed.", min=0, max=2**32 - 1)] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="PNG file (default RUN_DIR/samples/...; "
                                             "required for a diffusers directory).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    data: Annotated[str | None, typer.Option("--data", help="Optional: sampling needs no data "
                                             "(a diffusers directory states its shape); given, "
                                             "the same choices as the analysis commands.")] = None,
) -> None:
    """Generate samples and save them as a PNG grid (or a scatter plot for 2-D data)."""
    from flatgen.diffusion import SAMPLERS, generate
    from flatgen.io import check_new_file, check_outside_runs, check_writable
    from flatgen.models.pretrained import is_diffusers_dir
    from flatgen.open_model import open_model
    from flatgen.plotting import save_samples_png

    _str_list(sampler, SAMPLERS, "--sampler")
    if out is None and is_diffusers_dir(run_dir) and not (run_dir / "config.yaml").is_file():
        raise InputError(f"{str(run_dir)!r} is a diffusers directory, which flatgen never writes "
                         "into: name the PNG file with --out")
    run = open_model(run_dir, data=data, out=out, needs_data=False)
    model = run.model(weights)
    if out is not None:  # the user's file: never overwritten without --force
        check_new_file(out, force=force)
        if out.suffix.lower() != ".png":
            raise InputError(f"--out {str(out)!r}: sample writes a PNG; name the file *.png")
        check_outside_runs(out.parent, own=run_dir)
    else:  # the run's own samples/ folder: a re-run replaces its picture
        out = run_dir / "samples" / f"{weights}_{sampler}_T{steps}_seed{seed}.png"
        check_writable(out.parent, "the run directory")
    shape = tuple(run.sample_shape())
    # the data are drawn under 2-D samples only; an image grid needs none
    reference = run.data()[1] if len(shape) == 1 else None
    with console.status(f"sampling {n} with {sampler}, T'={steps}"):
        x = generate(model, run.schedule, n=n, shape=shape, steps=steps,
                     sampler=sampler, seed=seed)
    save_samples_png(x, out, reference=reference)
    console.print(f"wrote {out}")


# ---------------------------------------------------------------- evaluate


@app.command()
@cli_command
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory (diffusers save_pretrained format).")],
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an earlier export in --out.")] = False,
) -> None:
    """Export the U-Net and its scheduler as a diffusers DDPMPipeline directory.

    --out must be new or empty, or (with --force) an earlier export, which is replaced whole.
    """
    from flatgen.export import check_export_dir, export_pipeline
    from flatgen.train import load_run

    run = load_run(run_dir)
    check_export_dir(out, force=force)
    path = export_pipeline(run, out, weights=weights, force=force)
    console.print(f"wrote {path}  (load with diffusers.DDPMPipeline.from_pretrained)")


# ---------------------------------------------------------------- sharpness / landscape
