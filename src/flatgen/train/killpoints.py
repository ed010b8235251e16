"""A test hook that kills training at a fixed point, as kill -9 or an OOM kill would.

FLATGEN_KILL_AT="NAME" or "NAME:STEP" makes the process os._exit(137) (no cleanup, no flush)
the first time it reaches point NAME (at step STEP, if given). The points:

  config            config.yaml written, before the first step
  step              an optimizer step done and logged, before its checkpoint
  metrics-write     half of a metrics.jsonl line written
  checkpoint-write  inside a checkpoint write: some files in its temporary folder
  checkpoint-link   checkpoints/step-<n> in place, checkpoints/last not yet updated
  summary           the final checkpoint written, train_summary.json not yet

The test suite kills runs at these points and checks that `--resume` ends bitwise equal to
an uninterrupted run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

ENV = "FLATGEN_KILL_AT"
KILLED_EXIT_CODE = 137  # what a shell reports for kill -9
POINTS = ("config", "step", "metrics-write", "checkpoint-write", "checkpoint-link", "summary")


def kill_requested(name: str, step: int | None = None) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    point, _, at = spec.partition(":")
    if point != name:
        return False
    return not at or (step is not None and at.strip() == str(step))


def kill_point(
    name: str, step: int | None = None, before: Callable[[], None] | None = None
) -> None:
    """Exit at once if FLATGEN_KILL_AT names this point (and step); `before` runs first."""
    if kill_requested(name, step):
        if before is not None:
            before()
        os._exit(KILLED_EXIT_CODE)
