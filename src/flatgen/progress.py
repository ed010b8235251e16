"""One look for every progress bar in flatgen (rich), and a no-op stand-in when disabled."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Iterations per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} it/s" if speed else "-- it/s", style="progress.data.speed")


def make_progress(enabled: bool = True, fields: str = "", *, transient: bool = False) -> Any:
    """A rich Progress (use as a context manager), or nullcontext(None) when disabled.

    `fields` is a format string over task fields shown after the rate, e.g.
    "loss {task.fields[loss]:.4f}"; a transient display is cleared when it ends.
    """
    if not enabled:
        return nullcontext(None)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
    ]
    if fields:
        columns.append(TextColumn(fields))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, transient=transient)
