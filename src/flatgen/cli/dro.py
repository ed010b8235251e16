"""flatgen dro."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flatgen.cli.common import app, cli_command, console


@app.command()
@cli_command
def dro(
    config: Annotated[Path, typer.Argument(
        help="DRO experiment YAML (configs/toy2d-dro.yaml, configs/digits-dro-game.yaml).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output directory (default runs/<config name>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a key of the YAML: section.key=value (repeatable).")] = None,
) -> None:
    """The Wasserstein DRO game for generators against minimum-W2 training and WGAN-GP.

    Writes results.json, table.md / table.csv and plots into the output directory.
    """
    from pydantic import ValidationError

    from flatgen.config import (
        ConfigError,
        apply_overrides,
        format_validation_error,
        read_yaml_mapping,
    )
    from flatgen.dro import run_dro_experiment
    from flatgen.io import check_outside_runs, check_writable

    data = apply_overrides(read_yaml_mapping(config), list(set_ or []))
    out = out or Path("runs") / config.stem
    check_outside_runs(out)
    check_writable(out)
    try:
        summary = run_dro_experiment(data, out, progress=progress)
    except ValidationError as err:
        raise ConfigError(f"{config}: {format_validation_error(err)}") from None
    console.print(summary["table_markdown"])
    console.print(f"wrote {out}")
