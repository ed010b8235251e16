"""The options of `--until-decided` (study and demo) and the loop they run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from flatgen.cli.common import console
from flatgen.errors import InputError


def until_decided(cfg, out: Path, seq: dict, *, executor: str | None,
                  run_seeds: Callable) -> dict:
    """--until-decided: batches of seeds, a look after each (study/sequential.py); the report of
    the last look. The jobs load each look's config from OUT/study.yaml."""
    from flatgen.study.collect import collect_sequential
    from flatgen.study.sequential import run_until_decided

    if executor == "slurm":
        raise InputError("--until-decided judges each batch when it has finished: run it with "
                         "--executor local or inline (Slurm jobs finish later)")
    budget = seq["budget"] * 60 if seq["budget"] is not None else None
    outcome = run_until_decided(cfg, out, console=console, max_seeds=seq["max_seeds"],
                                budget_s=budget, run_seeds=run_seeds)
    console.print(f"stopped: {outcome.stopped}; undecided: {', '.join(outcome.pending) or 'none'}")
    return collect_sequential(outcome, out)


UntilDecided = Annotated[bool, typer.Option(
    "--until-decided", help="Add seeds in batches (verdicts.sequential.batch, default 5; seeds "
    "counted up from the config's first) until every primary claim is decided, judging after "
    "each batch with O'Brien-Fleming alpha-spending over the planned looks.")]
MaxSeeds = Annotated[int | None, typer.Option(
    "--max-seeds", min=2, help="With --until-decided: the most seeds, the last planned look "
    "(default verdicts.sequential.max_seeds, 20).")]
Budget = Annotated[float | None, typer.Option(
    "--budget", min=1, help="With --until-decided: wall-clock minutes from the start; no batch "
    "starts that would end past them by the last batch's time (the first always runs).")]


def check_sequential(until_decided: bool, plan: bool, seq: dict) -> None:
    if not until_decided and any(v is not None for v in seq.values()):
        raise InputError("--max-seeds and --budget go with --until-decided")
    if until_decided and plan:
        raise InputError("--plan lists the config's seeds; --until-decided chooses its seeds "
                         "as it goes: plan without it")
