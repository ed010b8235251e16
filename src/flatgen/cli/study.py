"""flatgen study, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flatgen.cli.common import (
    app,
    cli_command,
    console,
)
from flatgen.cli.sequential import Budget, MaxSeeds, UntilDecided, check_sequential, until_decided
from flatgen.io import check_outside_runs, check_writable

# ---------------------------------------------------------------- study / demo


TERMINAL_COLUMNS = ("method", "seeds", "dFID T'=", "W2 T'=", "λmax", "trace", "4-bit tensor")


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
    from flatgen.report.tables import verdict_rows

    head, rows = verdict_rows(summary["claims"])  # the report's verdict table
    verdicts = Table(title="verdicts (adjusted p: Holm with Shaffer's constraint, primary claims)")
    for h in head:
        verdicts.add_column(h)
    for row in rows:
        verdicts.add_row(*row)
    console.print(verdicts)
    if summary["missing"]:
        console.print(f"[yellow]missing runs:[/yellow] {', '.join(summary['missing'])}")
    console.print(f"report: {summary['report']}")


def _run(cfg, out: Path, *, config: Path | None, executor: str | None, jobs: int | None,
         only: str | None, progress: bool) -> dict[str, str] | None:
    """Run the units through an executor and say how each ended; None when they were handed
    to Slurm (collect later). Exits 1 (RunFailed) when every unit failed, or `only` did."""
    from flatgen.errors import RunFailed
    from flatgen.study.plan import estimate_costs
    from flatgen.study.run import run_units

    estimates = None
    if executor in (None, "local") and only is None:
        costs = estimate_costs(cfg, calibrate_here=False)  # the plan's formula, no calibration run
        estimates = {u: c.total_s for u, c in costs.items()} if costs else None
    status = run_units(cfg, out, executor=executor, jobs=jobs, config=config, console=console,
                       only=only, progress=progress, estimates=estimates)
    if any(v.startswith("submitted") for v in status.values()):
        for unit, state in status.items():
            console.print(f"{unit}: {state.removeprefix('submitted: ')}")
        config = config or out / "study.yaml"  # the demo's, written by run_units
        console.print(f"when they finish: flatgen study {config} --out {out} --collect")
        return None
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if only is not None:
        console.print(f"{only}: {status.get(only)}")
        if failed:
            raise typer.Exit(1)
    elif failed and len(failed) == len(status):  # nothing to report: a run-time failure
        raise RunFailed(f"all {len(failed)} runs failed (tracebacks in "
                        f"{str(out / 'runs')!r}/*/error.log)")
    elif failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; the report covers the rest")
    return status


def _until_decided(cfg, out: Path, run: dict, seq: dict) -> dict:
    return until_decided(cfg, out, seq, executor=run["executor"],
                         run_seeds=lambda current: _run(current, out, config=None, **run))


def _plan(config: Path, cfg, out: Path, jobs: int | None) -> None:
    """--plan: the cost estimate (as # comments), then one command per unit; writes nothing."""
    from flatgen.study import plan_commands
    from flatgen.study.plan import estimate_costs, format_costs
    from flatgen.study.run import default_jobs

    costs = estimate_costs(cfg)
    if costs:
        print(format_costs(costs, jobs=jobs or default_jobs()))
    print("\n".join(plan_commands(config, cfg, out)))
    print(f"flatgen study {config} --out {out} --collect")


def _classifier_study(config: Path, out: Path | None, *, plan: bool, collect: bool,
                      run: dict) -> None:
    """A classifier study (task: classifier), through the one study engine."""
    from flatgen.study import load_study
    from flatgen.study.collect import collect as collect_report

    cfg = load_study(config)
    out = out or Path("studies") / cfg.name
    if plan:
        return _plan(config, cfg, out, run["jobs"])
    status = None if collect else _run(cfg, out, config=config, **run)
    if not collect and (status is None or run["only"] is not None):
        return
    summary = collect_report(cfg, out)
    print(summary["table_markdown"])  # plain: rich would re-wrap the wide markdown table
    console.print(summary["verdict"])
    console.print(f"wrote {out}")
    if status and any(v.startswith("failed") for v in status.values()):
        raise typer.Exit(1)


EXECUTOR_HELP = ("inline (one process), local (parallel processes, one torch thread each) or "
                 "slurm (one job per unit; then --collect). Default: local on a CPU machine "
                 "with more than one unit to run, else inline.")


@app.command()
@cli_command
def study(
    config: Annotated[Path, typer.Argument(help="Study YAML (see configs/digits-study.yaml).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Study directory (default studies/<name>).")] = None,
    plan: Annotated[bool, typer.Option(
        "--plan", help="Print one command per run (and, for a diffusion study, the "
        "estimated cost); run nothing.")] = False,
    collect: Annotated[bool, typer.Option(
        "--collect", help="Only build the report from finished runs.")] = False,
    only: Annotated[str | None, typer.Option(
        "--only", help="Run one unit, e.g. sam-s0 (see --plan).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    executor: Annotated[str | None, typer.Option("--executor", help=EXECUTOR_HELP)] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, help="Parallel processes (local; default: the cores).")] = None,
    until_decided: UntilDecided = False, max_seeds: MaxSeeds = None, budget: Budget = None,
) -> None:
    """Train methods x seeds, measure quality, flatness and robustness, write report.html.

    Finished runs are skipped on restart; a failed run is reported, the rest go on, and the
    command exits 1. A malformed study (a bad config, or runs in --out trained with another
    config) is refused before anything runs, with exit code 2. A classifier study
    (task: classifier) writes table.md, results.csv/json and scatter.png instead of
    report.html.
    """
    from flatgen.study import load_study_config, task_of
    from flatgen.study.collect import collect_study
    from flatgen.study.executors import check_executor

    run = {"executor": executor, "jobs": jobs, "only": only, "progress": progress}
    seq = {"max_seeds": max_seeds, "budget": budget}
    check_executor(executor)  # with --plan too: a plan for an executor that does not exist
    check_sequential(until_decided, plan, seq)
    if task_of(config) == "classifier":
        return _classifier_study(config, out, plan=plan, collect=collect, run=run)
    cfg = load_study_config(config)
    out = out or Path("studies") / cfg.name
    if plan:
        return _plan(config, cfg, out, jobs)
    check_outside_runs(out)
    check_writable(out)
    if until_decided and not collect:
        return _print_study_summary(_until_decided(cfg, out, run, seq), out)
    status = None if collect else _run(cfg, out, config=config, **run)
    if not collect and (status is None or only is not None):
        return
    _print_study_summary(collect_study(cfg, out), out)
    if status and any(v.startswith("failed") for v in status.values()):
        raise typer.Exit(1)


@app.command()
@cli_command
def demo(
    quick: Annotated[bool, typer.Option(
        "--quick", help="A short version (about 3 minutes on 2 idle cores).")] = False,
    seeds: Annotated[int, typer.Option(
        "--seeds", min=1,
        help="Training seeds 0..N-1 (error bars and tested verdicts need >= 2).")] = 1,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output directory (default demo, or demo-quick).")] = None,
    executor: Annotated[str | None, typer.Option("--executor", help=EXECUTOR_HELP)] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, help="Parallel processes (local; default: the cores).")] = None,
    until_decided: UntilDecided = False, max_seeds: MaxSeeds = None, budget: Budget = None,
) -> None:
    """The embedded default: a digits study of the baseline, EMA, SAM and SAM+EMA, with a report.

    Finished runs in --out are reused, so `--seeds 3` after a plain demo trains only seeds 1 and 2.
    """
    import time

    from flatgen.study.collect import collect_study
    from flatgen.study.demo import demo_study
    from flatgen.study.executors import check_executor

    t0 = time.perf_counter()
    check_executor(executor)
    check_sequential(until_decided, False, {"max_seeds": max_seeds, "budget": budget})
    out = out or Path("demo-quick" if quick else "demo")
    check_outside_runs(out)
    check_writable(out)
    cfg = demo_study(quick, seeds=seeds)
    run = {"executor": executor, "jobs": jobs, "only": None, "progress": True}
    if until_decided:
        _print_study_summary(_until_decided(cfg, out, run, {"max_seeds": max_seeds,
                                                             "budget": budget}), out)
        console.print(f"demo wall time: {time.perf_counter() - t0:.0f} s")
        return
    # the jobs load the demo's config from OUT/study.yaml (run_units writes it)
    status = _run(cfg, out, config=None, **run)
    if status is None:  # handed to Slurm
        return
    _print_study_summary(collect_study(cfg, out), out)
    console.print(f"demo wall time: {time.perf_counter() - t0:.0f} s")
    if any(v.startswith("failed") for v in status.values()):
        raise typer.Exit(1)
