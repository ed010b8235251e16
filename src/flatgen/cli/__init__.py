"""The flatgen command line: thin wrappers that parse, call the library, print a rich summary.

Bad input (a bad config key, a missing run or data path) is one line on stderr and exit code 2,
never a traceback; set FLATGEN_DEBUG=1 to see the traceback anyway.
"""

from typing import Annotated

import typer

# importing a command module registers its commands, in this order in --help
# isort: off
from flatgen.cli import train, analyze, study, dro  # noqa: F401
# isort: on
from flatgen.cli.common import app, cli_command


def _print_version(value: bool) -> None:
    if value:
        from flatgen import __version__

        print(f"flatgen {__version__}")
        raise typer.Exit()


@app.callback()
@cli_command
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train generative models toward flat minima and measure what flatness buys."""
    from flatgen.optional import check_versions

    check_versions()  # an incompatible torch / diffusers pair, named in one line (exit 2)


def main() -> None:  # pragma: no cover - console-script entry
    app()


__all__ = ["app", "main"]
