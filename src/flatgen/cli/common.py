"""Shared pieces of the command line: the app, the consoles, the one error path, parsers."""

from __future__ import annotations

import functools
import os

import typer
from rich.console import Console

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


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"{what} must be >= 0, got {text!r}")
    return values
