"""The two kinds of failure the command line tells apart (exit 2 and exit 1).

InputError: an input refused before any work starts (config, paths, permissions, file contents,
data); nothing has been written. RunFailed: a failure at run time (training diverged, a study
with failed runs); what was saved before it is kept. Both carry one line naming the thing and
the fix.
"""

from __future__ import annotations


class InputError(ValueError):
    """An input refused before any work: exit code 2."""


class CheckpointError(InputError):
    """A checkpoint or weights file that cannot be used (corrupt, mismatched, non-finite)."""


class OutputError(InputError):
    """An output path that cannot be written as asked (exists, is a file, is read-only)."""


class RunFailed(RuntimeError):
    """A failure at run time: exit code 1."""


class TrainingDiverged(RunFailed):
    """A non-finite loss or gradient stopped training."""
