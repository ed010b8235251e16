"""The flatgen command line: thin wrappers that parse, call the library, print a rich summary.

Bad input (a bad config key, a missing run or data path) is one line on stderr and exit code 2,
never a traceback; set FLATGEN_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flatgen.progress import make_progress

app = typer.Typer(
    help="Train generative models toward flat minima and measure what flatness buys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from flatgen.config import ConfigError
    from flatgen.data import DataPathError
    from flatgen.train import RunDirError, RunNotFoundError

    return (ConfigError, DataPathError, RunDirError, RunNotFoundError, FileNotFoundError, ValueError)


def cli_command(fn):
    """Turn expected user errors into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as err:
            if os.environ.get("FLATGEN_DEBUG"):
                raise
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            err_console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers, got {text!r}")
    return values


def _str_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{what} must be from {', '.join(allowed)}, got {text!r}")
    return values


def _weights_list(run, text: str) -> list[str]:
    from flatgen.train import WEIGHTS_CHOICES

    if text == "all":
        return run.available_weights()
    names = _str_list(text, WEIGHTS_CHOICES, "--weights")
    for w in names:  # say so now, not after a progress bar has started
        run.check_weights(w)
    return names


# ---------------------------------------------------------------- train


@app.command()
@cli_command
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<config name>).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model; writes config.yaml, metrics.jsonl and checkpoints/ into the run directory."""
    from flatgen.config import load_config
    from flatgen.train import train as run_training

    out = out or Path("runs") / config.stem
    overrides = list(set_ or [])
    if resume and (out / "config.yaml").is_file():
        cfg = load_config(out / "config.yaml", overrides)  # the run's own config, plus overrides
    else:
        cfg = load_config(config, overrides)
    result = run_training(cfg, out, resume=resume, progress=progress)
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: exiting with a live gloo group can abort at teardown
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch: rank 0 reports
        return
    table = Table(title=f"trained {cfg.method.name} on {cfg.data.name}", show_header=False)
    table.add_row("run directory", str(out))
    table.add_row("steps", f"{result.steps} / {cfg.train.steps}")
    table.add_row("final loss", f"{result.final_loss:.4f}")
    table.add_row("time", f"{result.seconds:.1f} s ({result.it_per_s:.2f} it/s)")
    console.print(table)
    if result.steps < cfg.train.steps:
        console.print(f"interrupted: continue with  flatgen train {config} --out {out} --resume")
        raise typer.Exit(130)  # the shell's code for "stopped by Ctrl-C", so scripts can tell


# ---------------------------------------------------------------- sample


@app.command()
@cli_command
def sample(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    steps: Annotated[int, typer.Option(help="Sampling steps T'.", min=1)] = 20,
    n: Annotated[int, typer.Option(help="Number of samples.", min=1)] = 64,
    sampler: Annotated[str, typer.Option(help="adm (stochastic, respaced) or ddim (eta=0).")] = "adm",
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="PNG file (default RUN_DIR/samples/...).")] = None,
) -> None:
    """Generate samples and save them as a PNG grid (or a scatter plot for 2-D data)."""
    from flatgen.diffusion import SAMPLERS, generate
    from flatgen.report.images import save_samples_png
    from flatgen.train import load_run

    _str_list(sampler, SAMPLERS, "--sampler")
    run = load_run(run_dir)
    model = run.model(weights)
    _, test = run.data()
    with console.status(f"sampling {n} with {sampler}, T'={steps}"):
        x = generate(model, run.schedule, n, tuple(test.shape[1:]), steps, sampler, seed)
    out = out or run_dir / "samples" / f"{weights}_{sampler}_T{steps}_seed{seed}.png"
    save_samples_png(x, out, reference=test)
    console.print(f"wrote {out}")


# ---------------------------------------------------------------- evaluate


def _quality_table(result: dict, title: str) -> Table:
    floor = result["floor"] or {}
    has_fid = "digits_fid" in (result["results"][0] if result["results"] else {})
    table = Table(title=title)
    for col in ["weights", "sampler", "T'", "W2"] + (["digits-FID", "KID x1e3"] if has_fid else []):
        table.add_column(col, justify="right")
    for row in result["results"]:
        cells = [row["weights"], row["sampler"], str(row["steps"]), f"{row['w2']:.3f}"]
        if has_fid:
            cells += [f"{row['digits_fid']:.2f}", f"{1e3 * row['kid']:.2f}"]
        table.add_row(*cells)
    cells = ["real data", "floor", "", f"{floor.get('w2_floor', float('nan')):.3f}"]
    if has_fid:
        cells += [f"{floor['digits_fid_floor']:.2f}", f"{1e3 * floor['kid_floor']:.2f}"]
    table.add_row(*cells, style="dim")
    return table


@app.command()
@cli_command
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    steps: Annotated[str, typer.Option(help="Comma-separated sampling steps T'.")] = "10,100",
    n: Annotated[int | None, typer.Option(help="Samples per setting (default: test-set size).", min=2)] = None,
    sampler: Annotated[str, typer.Option(help="Comma-separated samplers: adm, ddim.")] = "adm,ddim",
    weights: Annotated[str, typer.Option(help="raw, ema, swa (comma-separated) or all.")] = "all",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 1234,
) -> None:
    """Sample quality (W2, and digits-FID/KID on digits) per T' and sampler, with the real-data floor.

    Writes RUN_DIR/eval/quality.json.
    """
    from flatgen.diffusion import SAMPLERS
    from flatgen.evaluate import evaluate_quality
    from flatgen.io import write_json_atomic
    from flatgen.train import load_run

    run = load_run(run_dir)
    result = evaluate_quality(
        run, _weights_list(run, weights), _int_list(steps, "--steps"),
        _str_list(sampler, SAMPLERS, "--sampler"), n=n, seed=seed,
    )
    path = write_json_atomic(run_dir / "eval" / "quality.json", result)
    console.print(_quality_table(result, f"sample quality, n={result['n']} (lower is better)"))
    console.print(f"wrote {path}")


# ---------------------------------------------------------------- export


@app.command()
@cli_command
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (diffusers save_pretrained format).")],
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
) -> None:
    """Export the U-Net and its scheduler as a diffusers DDPMPipeline directory."""
    from flatgen.export import export_pipeline
    from flatgen.train import load_run

    path = export_pipeline(load_run(run_dir), out, weights)
    console.print(f"wrote {path}  (load with diffusers.DDPMPipeline.from_pretrained)")


# ---------------------------------------------------------------- sharpness / landscape


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{what} must be >= 0, got {text!r}")
    return values


@app.command()
@cli_command
def sharpness(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Top Hessian eigenvalues (Lanczos).", min=0)] = 5,
    trace: Annotated[bool, typer.Option("--trace/--no-trace", help="Hessian trace (Hutch++).")] = True,
    density: Annotated[bool, typer.Option("--density", help="Spectral density (SLQ).")] = False,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Top eigenvalue of each layer's block.")] = False,
    rhos: Annotated[str, typer.Option(help="Worst case: per-filter relative radii (PGD in a filter-normalized ball).")] = "0.01,0.05,0.1",
    sigmas: Annotated[str, typer.Option(help="Per-filter Gaussian weight-noise scales.")] = "0.01,0.05,0.1",
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    batch: Annotated[int, typer.Option(help="Fixed (x0, t, noise) triples the loss is measured on.", min=1)] = 256,
) -> None:
    """Flatness of the trained loss: eigenvalues, trace, density, loss under weight perturbation.

    Writes RUN_DIR/eval/sharpness.json and sharpness.png.
    """
    from flatgen.analysis import plot_sharpness, sharpness_summary
    from flatgen.io import write_json_atomic
    from flatgen.report.measure import sharpness_loss_fn
    from flatgen.train import load_run

    run = load_run(run_dir)
    model = run.model(weights)
    loss_fn = sharpness_loss_fn(run, batch)
    with make_progress(True, fields="{task.fields[stage]}") as bar:
        task = bar.add_task("sharpness", total=None, stage="")

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, stage=stage)

        summary = sharpness_summary(
            model, loss_fn, top_k=top_k, trace=trace, density=density, per_layer=per_layer,
            rhos=_float_list(rhos, "--rhos"), sigmas=_float_list(sigmas, "--sigmas"), progress=on_progress,
        )
    summary |= {"weights": weights, "batch": batch}
    path = write_json_atomic(run_dir / "eval" / "sharpness.json", summary)
    plot_sharpness(summary, run_dir / "eval" / "sharpness.png")
    table = Table(title=f"sharpness of {run.cfg.method.name} ({weights} weights)", show_header=False)
    table.add_row("loss on the fixed batch", f"{summary['loss']:.5f}")
    if summary["top_k"]:
        table.add_row(f"top-{len(summary['top_k'])} eigenvalues", ", ".join(f"{v:.4g}" for v in summary["top_k"]))
    if summary.get("trace"):
        tr = summary["trace"]
        table.add_row("trace", f"{tr['estimate']:.4g} ± {tr['stderr']:.2g}" if isinstance(tr, dict) else f"{tr:.4g}")
    console.print(table)
    console.print(f"wrote {path}")


@app.command()
@cli_command
def landscape(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    dim: Annotated[int, typer.Option(help="1 (a line) or 2 (a plane).", min=1, max=2)] = 2,
    grid: Annotated[int, typer.Option(help="Points per axis.", min=3)] = 21,
    span: Annotated[float, typer.Option(help="Half-width of the grid, in filter-normalized units.")] = 1.0,
    weights: Annotated[str, typer.Option(help="raw, ema or swa.")] = "raw",
    batch: Annotated[int, typer.Option(help="Fixed (x0, t, noise) triples the loss is measured on.", min=1)] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the random directions.")] = 0,
) -> None:
    """Loss along filter-normalized random directions through the trained weights (Li et al. 2018).

    Writes RUN_DIR/eval/landscape.npz (redraw with flatgen.analysis.load_landscape) and landscape.png.
    """
    from flatgen.analysis import loss_landscape, plot_landscape, save_landscape
    from flatgen.report.measure import sharpness_loss_fn
    from flatgen.train import load_run

    if span <= 0:
        raise ValueError(f"--span must be > 0, got {span}")
    run = load_run(run_dir)
    model = run.model(weights)
    loss_fn = sharpness_loss_fn(run, batch)
    with make_progress(True) as bar:
        task = bar.add_task("landscape", total=grid**dim)
        result = loss_landscape(model, loss_fn, dim=dim, grid=grid, span=span, seed=seed,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    npz = save_landscape(result, run_dir / "eval" / "landscape.npz")
    png = plot_landscape(result, run_dir / "eval" / "landscape.png")
    console.print(f"loss at the trained weights {result.loss0:.5f}; "
                  f"max on the grid {float(result.losses.max()):.5f}")
    console.print(f"wrote {npz} and {png}")


# ---------------------------------------------------------------- robustness


@app.command()
@cli_command
def robustness(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by flatgen train.")],
    suite: Annotated[str, typer.Option(help="Comma-separated: steps, quant, attack, noise.")] = "steps,quant,attack,noise",
    weights: Annotated[str, typer.Option(help="raw, ema, swa (comma-separated) or all.")] = "all",
    n: Annotated[int | None, typer.Option(help="Samples per evaluation (default 128).", min=2)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Suite setting: key=value, e.g. bits=[8,4].")] = None,
) -> None:
    """Quality vs sampling steps (+ exposure bias), weight quantization, attacks, weight noise.

    Writes RUN_DIR/eval/robustness.json and one PNG per suite.
    """
    import yaml
    from pydantic import ValidationError

    from flatgen.config import format_validation_error
    from flatgen.evaluate import FLOOR_SEED
    from flatgen.io import write_json_atomic
    from flatgen.metrics import train_floor_sample
    from flatgen.robustness import SUITES, RobustnessSettings, plot_robustness, run_robustness_suite
    from flatgen.train import load_run

    suites = _str_list(suite, SUITES, "--suite")
    run = load_run(run_dir)
    names = _weights_list(run, weights)
    values = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        values[key.strip()] = yaml.safe_load(raw)
    if n is not None:
        values["n_samples"] = n
    try:
        settings = RobustnessSettings(**values)
    except ValidationError as err:
        raise ValueError(format_validation_error(err).replace("invalid config", "invalid robustness setting")
                         + " (lists are written like bits=[8,4])") from None
    train, test = run.data()
    size = settings.n_samples or len(test)
    floor_ref = train_floor_sample(train, min(len(train), max(size, len(test))), seed=FLOOR_SEED)
    result = run_robustness_suite({w: run.model(w) for w in names}, run.schedule, test, floor_ref,
                                  suites, settings)
    path = write_json_atomic(run_dir / "eval" / "robustness.json", result)
    pngs = plot_robustness(result, run_dir / "eval")
    table = Table(title=f"robustness of {run.cfg.method.name} (metric {result['metric']}, lower is better; "
                        "robust ε/σ: higher is better)")
    table.add_column("weights")
    table.add_column("headline numbers")
    for name, row in result["summary"].items():
        flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
        largest = row.get("robust_epsilon_largest_tried", {})
        flat |= {f"robust ε {k}": v if v is not None else
                 f"> {largest[k]:g} (never degraded)" if k in largest else "never degraded"
                 for k, v in row.get("robust_epsilon", {}).items()}
        table.add_row(name, "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                                       for k, v in flat.items()))
    console.print(table)
    console.print(f"wrote {path} and {len(pngs)} plot(s) in {run_dir / 'eval'}")


# ---------------------------------------------------------------- dro


@app.command()
@cli_command
def dro(
    config: Annotated[Path, typer.Argument(help="DRO experiment YAML (configs/toy2d-dro.yaml, configs/digits-dro-game.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default runs/<config name>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The Wasserstein DRO game for generators against minimum-W2 training and WGAN-GP.

    Writes results.json, table.md / table.csv and plots into the output directory.
    """
    import yaml
    from pydantic import ValidationError

    from flatgen.config import ConfigError, format_validation_error
    from flatgen.dro import run_dro_experiment

    if not config.is_file():
        raise ConfigError(f"config file {str(config)!r} not found")
    data = yaml.safe_load(config.read_text()) or {}
    out = out or Path("runs") / config.stem
    try:
        summary = run_dro_experiment(data, out, progress=progress)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    console.print(summary["table_markdown"])
    console.print(f"wrote {out}")


# ---------------------------------------------------------------- study / demo


TERMINAL_COLUMNS = ("method", "seeds", "dFID T'=", "W2 T'=", "λmax", "4-bit", "robust ε (x_t, L∞)",
                    "robust σ (weights)")


def _print_study_summary(summary: dict, out: Path) -> None:
    # the terminal gets the headline columns (quality at every T' measured, W2 only where there
    # is no dFID); table.md and report.html have all of them
    header = summary["header"]
    has_fid = any(h.startswith("dFID T'=") for h in header)
    keep = [i for i, h in enumerate(header) if any(h.startswith(c) for c in TERMINAL_COLUMNS)
            and not (has_fid and h.startswith("W2 T'=") and h != "W2 T'=20")]
    table = Table(title="study results (mean ± std over seeds; all columns in table.md)")
    for i in keep:
        table.add_column(summary["header"][i], justify="right")
    for row in summary["body"]:
        table.add_row(*[row[i] for i in keep])
    console.print(table)
    for claim in summary["claims"]:
        console.print(f"• {claim.text}\n    [bold]{claim.verdict}[/bold]")
    if summary["missing"]:
        console.print(f"[yellow]missing runs:[/yellow] {', '.join(summary['missing'])}")
    console.print(f"report: {summary['report']}")


def _study_task(config: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) if config.is_file() else None
    except yaml.YAMLError:
        return "diffusion"  # load_study_config reports the YAML error
    return data.get("task", "diffusion") if isinstance(data, dict) else "diffusion"


def _classifier_study(config: Path, out: Path | None, progress: bool) -> None:
    """Sharpness versus adversarial vulnerability of classifiers (task: classifier)."""
    import yaml
    from pydantic import ValidationError

    from flatgen.classify import run_classifier_study
    from flatgen.config import ConfigError, format_validation_error

    data = yaml.safe_load(config.read_text())
    out = out or Path("studies") / str(data.get("name", config.stem))
    try:
        summary = run_classifier_study(data, out, progress=progress)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err).replace("invalid config", "invalid study config")) from None
    print(summary["table_markdown"])  # plain: rich would re-wrap the wide markdown table
    console.print(summary["verdict"])
    console.print(f"wrote {out}")


@app.command()
@cli_command
def study(
    config: Annotated[Path, typer.Argument(help="Study YAML (see configs/digits-study.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", help="Study directory (default studies/<name>).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print one command per run, run nothing.")] = False,
    collect: Annotated[bool, typer.Option("--collect", help="Only build the report from finished runs.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Run one unit, e.g. sam-s0 (see --plan).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train methods x seeds, measure quality, flatness and robustness, write report.html.

    Finished runs are skipped on restart; a failed run is reported, the rest go on, and the
    command exits 1. A classifier study (task: classifier) writes table.md, results.csv/json
    and plots, and runs in one process (no --plan, --only or --collect).
    """
    from flatgen.report import collect_study, load_study_config, plan_commands, run_study

    if _study_task(config) == "classifier":
        if plan or collect or only:
            raise ValueError("--plan, --only and --collect are for diffusion studies; a classifier "
                             f"study runs in one process: flatgen study {config} --out DIR")
        _classifier_study(config, out, progress)
        return
    cfg = load_study_config(config)
    out = out or Path("studies") / cfg.name
    if plan:
        for line in plan_commands(config, cfg, out):
            print(line)
        print(f"flatgen study {config} --out {out} --collect")
        return
    if not collect:
        status = run_study(cfg, out, console, only=only, progress=progress)
        failed = {k: v for k, v in status.items() if v.startswith("failed")}
        if only is not None:
            console.print(f"{only}: {status.get(only)}")
            return
        if failed:
            console.print(f"[red]{len(failed)} run(s) failed[/red]; the report covers the rest")
    _print_study_summary(collect_study(cfg, out), out)
    if not collect and failed:
        raise typer.Exit(1)


@app.command()
@cli_command
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A short version (about 3 minutes on 2 idle cores).")] = False,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Training seeds 0..N-1 (error bars and tested verdicts need >= 2).")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default demo, or demo-quick).")] = None,
) -> None:
    """The embedded default: a digits study of the baseline, EMA, SAM and SAM+EMA, with a report.

    Finished runs in --out are reused, so `--seeds 3` after a plain demo trains only seeds 1 and 2.
    """
    import time

    from flatgen.report import collect_study, run_study
    from flatgen.report.demo import demo_study

    t0 = time.perf_counter()
    out = out or Path("demo-quick" if quick else "demo")
    cfg = demo_study(quick, seeds=seeds)
    status = run_study(cfg, out, console)
    summary = collect_study(cfg, out)
    _print_study_summary(summary, out)
    console.print(f"demo wall time: {time.perf_counter() - t0:.0f} s")
    if any(v.startswith("failed") for v in status.values()):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
