"""Shared pieces of the command line: the app, the consoles, the one error path, parsers.

The one error path: every failure ends in one line on stderr (two for an internal error),
never a traceback (FLATGEN_DEBUG=1 shows it):
  exit 2  an input refused before any work starts (config, option values, paths, permissions,
          file contents, data); nothing was written;
  exit 1  a failure at run time (training diverged, a disk filled up, a study with failed
          runs), or an internal error;
  exit 130  interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

try:  # Typer >= 0.26 vendors click; older versions use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import exceptions as click_exc

from flatgen.data import named_datasets  # the registry only: no torch

DEBUG_ENV = "FLATGEN_DEBUG"
EXIT_RUNTIME, EXIT_INPUT = 1, 2
MAX_LIST_INT = 100_000  # sampling steps and the like: a larger one is a typo

# `--data` of the analysis commands, for a diffusers directory: the names from the registry
DATA_HELP = (f"For a diffusers directory: {', '.join(named_datasets())}, or the path of a "
             "CIFAR-10 binary folder or an image folder.")

console = Console()
err_console = Console(stderr=True)


def _say_error(text: str, hint: str | None = None) -> None:
    err_console.print("[red]error:[/red] ", end="", highlight=False)
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)
    if hint:
        err_console.print(hint, markup=False, highlight=False, soft_wrap=True, style="dim")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class OneLineErrors(TyperGroup):
    """Option and argument errors (a bad value, a missing argument, an unknown option) as one
    line and exit 2, in the style of every other refused input, instead of a usage box."""

    def main(self, args: Any = None, *, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as err:
            if not standalone_mode:
                raise
            print(err.ctx.get_help() if err.ctx else "")
            sys.exit(0)
        except click_exc.ClickException as err:
            if not standalone_mode:
                raise
            command = err.ctx.command_path if getattr(err, "ctx", None) else "flatgen"
            _say_error(f"{err.format_message()} (see {command} --help)")
            sys.exit(EXIT_INPUT if isinstance(err, click_exc.UsageError) else err.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            _say_error("aborted")
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Train generative models toward flat minima and measure what flatness buys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _input_errors() -> tuple[type[BaseException], ...]:
    # ConfigError, RunDirError, CheckpointError, OutputError are ValueErrors; DataPathError and
    # RunNotFoundError are FileNotFoundErrors
    return (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            FileExistsError, PermissionError)


def debug_enabled() -> bool:
    """FLATGEN_DEBUG read as a boolean: unset, "", "0", "false", "no", "off" are off."""
    value = os.environ.get(DEBUG_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


# how libraries that do their I/O outside Python (safetensors' Rust, PIL, POT) name an OS error
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)|\[Errno (\d+)\]")
_PATH_TEXT = re.compile(r'at path "([^"]+)"')


def library_os_error(err: BaseException) -> OSError | None:
    """The OSError a library wrapped in its own exception (SafetensorError "No space left on
    device (os error 28)", an exception raised from an OSError), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err
        match = _OS_ERROR_TEXT.search(str(err))
        if match:
            code = int(next(g for g in match.groups() if g))
            path = _PATH_TEXT.search(str(err))
            return OSError(code, os.strerror(code), path[1] if path else None)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


RUNTIME_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO,
                  errno.EFBIG, errno.EPERM)


def exit_code_and_message(err: BaseException) -> tuple[int, str, str | None]:
    """(exit code, one-line message, optional hint line) for an exception a command raised."""
    from flatgen.errors import RunFailed

    known = (RunFailed, OSError, *_input_errors())  # already told apart below
    wrapped = None if isinstance(err, known) else library_os_error(err)
    if wrapped is not None and wrapped.errno in RUNTIME_ERRNOS:
        err = wrapped  # a disk full or a read-only disk met at run time, not a bug
    if isinstance(err, RunFailed):
        return EXIT_RUNTIME, _first_line(err), None
    if isinstance(err, _input_errors()):
        if isinstance(err, OSError) and err.strerror and err.filename:
            return EXIT_INPUT, f"{err.strerror}: {str(err.filename)!r}", None
        return EXIT_INPUT, _first_line(err), None
    if isinstance(err, OSError):  # at run time: a disk filled up, a device went away
        where = f": {str(err.filename)!r}" if err.filename else ""
        text = f"{err.strerror or _first_line(err)}{where}"
        return EXIT_RUNTIME, f"{text} (what was saved before is kept)", None
    return (EXIT_RUNTIME, f"internal error: {type(err).__name__}: {_first_line(err)}",
            f"this is a bug in flatgen; {DEBUG_ENV}=1 shows the traceback")


def cli_command(fn):
    """The one error path: any exception becomes one line on stderr and exit code 2 or 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
            if debug_enabled():
                raise
            code, text, hint = exit_code_and_message(err)
            _say_error(text, hint)
            raise typer.Exit(code) from None

    return wrapper


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers, got {text!r}")
    if max(values) > MAX_LIST_INT:
        raise ValueError(f"{what} must be at most {MAX_LIST_INT}, got {text!r}")
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
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers, got {text!r}")
    if any(v < 0 for v in values):
        raise ValueError(f"{what} must be >= 0, got {text!r}")
    return values


def _quality_table(result: dict, title: str) -> Table:
    floor = result["floor"] or {}
    has_fid = "digits_fid" in (result["results"][0] if result["results"] else {})
    table = Table(title=title)
    for col in ["weights", "sampler", "T'", "W2"] + (["digits-FID", "KID x1e3"] if has_fid else []):
        table.add_column(col, justify="right")
    has_inception = "inception_fid" in (result["results"][0] if result["results"] else {})
    if has_inception:
        table.add_column("Inception FID", justify="right")
        table.add_column("Inception KID x1e3", justify="right")
    for row in result["results"]:
        cells = [row["weights"], row["sampler"], str(row["steps"]), f"{row['w2']:.3f}"]
        if has_fid:
            cells += [f"{row['digits_fid']:.2f}", f"{1e3 * row['kid']:.2f}"]
        if has_inception:
            cells += [f"{row['inception_fid']:.2f}", f"{1e3 * row['inception_kid']:.2f}"]
        table.add_row(*cells)
    cells = ["real data", "floor", "", f"{floor.get('w2_floor', float('nan')):.3f}"]
    if has_fid:
        cells += [f"{floor['digits_fid_floor']:.2f}", f"{1e3 * floor['kid_floor']:.2f}"]
    if has_inception:
        cells += [f"{floor['inception_fid_floor']:.2f}",
                  f"{1e3 * floor['inception_kid_floor']:.2f}"]
    table.add_row(*cells, style="dim")
    return table
