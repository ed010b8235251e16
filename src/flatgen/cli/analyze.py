"""flatgen evaluate, sharpness, landscape, robustness."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flatgen.cli.common import (
    DATA_HELP,
    _float_list,
    _int_list,
    _quality_table,
    _str_list,
    _weights_list,
    app,
    cli_command,
    console,
)

MAX_SEED, MAX_SAMPLES = 2**32 - 1, 10**7  # as flatgen.config (kept torch- and pydantic-free)
RUN_HELP = "Run directory written by flatgen train, or a diffusers pipeline / UNet directory."
DataOpt = Annotated[str | None, typer.Option("--data", help=DATA_HELP)]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Output folder (default RUN_DIR/eval; required for a diffusers directory).")]
InceptionOpt = Annotated[Path | None, typer.Option("--inception-weights", help="FID Inception-v3 "
    "weights: Inception FID / KID on RGB images (default: $FLATGEN_INCEPTION_WEIGHTS, if set).")]
BatchOpt = Annotated[int, typer.Option(
    help="Fixed (x0, t, noise) triples the loss is measured on.", min=1)]


def _open(run_dir: Path, data: str | None, out: Path | None):
    """(run, output folder): a flatgen run writes into its eval/, a diffusers dir into --out,
    checked before any work: outside other runs and model folders, writable."""
    from flatgen.io import check_outside_runs, check_writable, remove_stale_temporaries
    from flatgen.open_model import open_model

    if out is not None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} is a file: give a folder")
        check_outside_runs(out, own=run_dir)
    run = open_model(run_dir, data=data, out=out)
    eval_dir = out if out is not None else run_dir / "eval"
    check_writable(eval_dir, "--out" if out is not None else "the run directory")
    if out is None:  # the run's own eval/: what a killed atomic write left there goes
        remove_stale_temporaries(eval_dir)
    return run, eval_dir


def _label(run) -> str:
    from flatgen.open_model import PretrainedRun

    return str(run.path) if isinstance(run, PretrainedRun) else run.cfg.method.name


@app.command()
@cli_command
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    steps: Annotated[str, typer.Option(help="Comma-separated sampling steps T'.")] = "10,100",
    n: Annotated[int | None, typer.Option(
        help="Samples per setting (default: test-set size).", min=2, max=MAX_SAMPLES)] = None,
    sampler: Annotated[str, typer.Option(help="Comma-separated samplers: adm, ddim.")] = "adm,ddim",
    weights: Annotated[str, typer.Option(help="raw, ema, swa (comma-separated) or all.")] = "all",
    seed: Annotated[int, typer.Option(help="Sampling seed.", min=0, max=MAX_SEED)] = 1234,
    inception: InceptionOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
) -> None:
    """Sample quality (W2; digits-FID/KID on digits) per T' and sampler, with the data floor.

    Writes RUN_DIR/eval/quality.json (or OUT/quality.json).
    """
    from flatgen.diffusion import SAMPLERS
    from flatgen.evaluate import evaluate_quality
    from flatgen.io import write_json_atomic
    from flatgen.metrics.inception import inception_weights_path

    run, eval_dir = _open(run_dir, data, out)
    result = evaluate_quality(
        run, weights=_weights_list(run, weights), steps=_int_list(steps, "--steps"),
        samplers=_str_list(sampler, SAMPLERS, "--sampler"), n=n, seed=seed,
        inception_weights=inception_weights_path(inception),
    )
    path = write_json_atomic(eval_dir / "quality.json", result)
    console.print(_quality_table(result, f"sample quality, n={result['n']} (lower is better)"))
    console.print(f"wrote {path}")


@app.command()
@cli_command
def sharpness(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    top_k: Annotated[int, typer.Option(
        "--top-k", help="Top Hessian eigenvalues (Lanczos).", min=0)] = 5,
    trace: Annotated[bool, typer.Option(
        "--trace/--no-trace", help="Hessian trace (Hutch++).")] = True,
    density: Annotated[bool, typer.Option("--density", help="Spectral density (SLQ).")] = False,
    per_layer: Annotated[bool, typer.Option(
        "--per-layer", help="Top eigenvalue of each layer's block.")] = False,
    rhos: Annotated[str, typer.Option(
        help="Worst case: per-filter relative radii (PGD in a "
        "filter-normalized ball).")] = "0.01,0.05,0.1",
    sigmas: Annotated[str, typer.Option(
        help="Per-filter Gaussian weight-noise scales.")] = "0.01,0.05,0.1",
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    batch: BatchOpt = 256,
    all_checkpoints: Annotated[bool, typer.Option(
        "--all-checkpoints", help="lambda_max and trace of every checkpoints/step-<n>, plotted "
        "over training (sharpness_history.json / .png).")] = False,
    data: DataOpt = None,
    out: OutOpt = None,
) -> None:
    """Flatness of the trained loss: eigenvalues, trace, density, loss under weight perturbation.

    Writes RUN_DIR/eval/sharpness.json and sharpness.png (or into OUT).
    """
    from flatgen.flatness import sharpness_report

    run, eval_dir = _open(run_dir, data, out)
    if all_checkpoints:
        from flatgen.sharpness_history import sharpness_history

        path, png = sharpness_history(run, eval_dir, weights=weights, batch=batch,
                                      top_k=max(1, top_k))
        console.print(f"wrote {path} and {png}")
        return
    summary, path = sharpness_report(
        run, eval_dir, weights=weights, batch=batch, top_k=top_k, trace=trace, density=density,
        per_layer=per_layer, rhos=_float_list(rhos, "--rhos"),
        sigmas=_float_list(sigmas, "--sigmas"),
    )
    table = Table(title=f"sharpness of {_label(run)} ({weights} weights)", show_header=False)
    table.add_row("loss on the fixed batch", f"{summary['loss']:.5f}")
    if summary["top_k"]:
        table.add_row(f"top-{len(summary['top_k'])} eigenvalues",
                      ", ".join(f"{v:.4g}" for v in summary["top_k"]))
    if summary.get("trace"):
        tr = summary["trace"]
        table.add_row("trace", f"{tr['estimate']:.4g} ± {tr['stderr']:.2g}"
                      if isinstance(tr, dict) else f"{tr:.4g}")
    console.print(table)
    console.print(f"wrote {path}")


@app.command()
@cli_command
def landscape(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    dim: Annotated[int, typer.Option(help="1 (a line) or 2 (a plane).", min=1, max=2)] = 2,
    grid: Annotated[int, typer.Option(help="Points per axis.", min=3)] = 21,
    span: Annotated[float, typer.Option(
        help="Half-width of the grid, in filter-normalized units.")] = 1.0,
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    batch: BatchOpt = 256,
    seed: Annotated[int, typer.Option(
        help="Seed of the random directions.", min=0, max=MAX_SEED)] = 0,
    data: DataOpt = None,
    out: OutOpt = None,
) -> None:
    """Loss along filter-normalized random directions through the trained weights (Li et al. 2018).

    Writes RUN_DIR/eval/landscape.npz (redraw with flatgen.analysis.load_landscape) and
    landscape.png.
    """
    from flatgen.flatness import landscape_report

    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"--span must be a positive finite number, got {span}")
    run, eval_dir = _open(run_dir, data, out)
    result, npz, png = landscape_report(run, eval_dir, weights=weights, batch=batch, dim=dim,
                                        grid=grid, span=span, seed=seed)
    console.print(f"loss at the trained weights {result.loss0:.5f}; "
                  f"max on the grid {float(result.losses.max()):.5f}")
    console.print(f"wrote {npz} and {png}")


# ---------------------------------------------------------------- robustness


@app.command()
@cli_command
def robustness(
    run_dir: Annotated[Path, typer.Argument(help=RUN_HELP)],
    suite: Annotated[str, typer.Option(
        help="Comma-separated suites (see flatgen.robustness.SUITES).")] = "all",
    weights: Annotated[str, typer.Option(help="raw, ema, swa (comma-separated) or all.")] = "all",
    n: Annotated[int | None, typer.Option(
        help="Samples per evaluation (default 128).", min=2, max=MAX_SAMPLES)] = None,
    selection: Annotated[bool, typer.Option(
        "--selection", help="Also measure the ladders on the separate selection noise.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Setting: robustness.KEY=VALUE, e.g. robustness.bits=[8,4].")] = None,
    inception: InceptionOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
) -> None:
    """Quality vs sampling steps, exposure bias, weight quantization, attacks, weight noise.

    Writes RUN_DIR/eval/robustness.json (with every ladder record) and one PNG per suite.
    --set takes the keys of a study config's evaluations.robustness section, under the section
    name `robustness` (as `train --set section.key=value`).
    """
    from flatgen.config import check_set_values
    from flatgen.diffusion import as_epsilon_model
    from flatgen.evaluate import FLOOR_SEED
    from flatgen.io import write_json_atomic
    from flatgen.metrics import inception_weights_path, train_floor_sample
    from flatgen.robustness import SUITES, plot_robustness, run_robustness_suite
    from flatgen.robustness.settings import parse_settings

    suites = list(SUITES) if suite == "all" else _str_list(suite, tuple(SUITES), "--suite")
    settings = parse_settings(check_set_values(set_ or []), n_samples=n)
    run, eval_dir = _open(run_dir, data, out)
    names = _weights_list(run, weights)
    train, test = run.data()
    size = settings.n_samples or len(test)
    floor_ref = train_floor_sample(train, min(len(train), max(size, len(test))), seed=FLOOR_SEED)
    models = {w: as_epsilon_model(run.model(w), run.schedule) for w in names}  # suites read eps
    result = run_robustness_suite(models, run.schedule, test, floor_reference=floor_ref,
                                  suites=suites, settings=settings, selection=selection,
                                  inception_weights=inception_weights_path(inception))
    path = write_json_atomic(eval_dir / "robustness.json", result)
    pngs = plot_robustness(result, eval_dir)
    metric = "; ".join(filter(None, (result["metric"], result["metric_note"])))  # cannot rank?
    table = Table(title=f"robustness of {run.cfg.method.name} (metric {metric}, lower is better)")
    table.add_column("weights")
    table.add_column("headline numbers")
    table.add_column("ladders: clean → values (levels)")
    for name, row in result["summary"].items():
        flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
        ladders = [f"{lid}: {_g(r['clean'])} → {', '.join(_g(v) for v in r['values'])} "
                   f"({', '.join(f'{x:g}' for x in r['levels'])})"
                   for lid, r in result["ladders"][name].items()]
        table.add_row(name, "\n".join(f"{k}: {_g(v)}" for k, v in flat.items()), "\n".join(ladders))
    console.print(table)
    console.print(f"wrote {path} and {len(pngs)} plot(s) in {eval_dir}")


def _g(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- dro
