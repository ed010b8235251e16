"""Optional features and the versions flatgen runs with: one-line answers, never a traceback.

`require(module, extra)` imports a package that only an optional feature needs (tensorboard,
submitit, wandb, torchmetrics / torch-fidelity) or says in one line which extra installs it.
`check_versions()` names a torch / diffusers pair that cannot work (read from the installed
packages' metadata, so it costs no torch import) instead of the internal error it would cause.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from types import ModuleType

from flatgen.errors import InputError

# the extras of pyproject.toml and what each installs (kept in step by tests/test_byo_packaging)
EXTRAS = {"tensorboard": ("tensorboard",), "slurm": ("submitit",), "wandb": ("wandb",),
          "fid": ("torchmetrics", "torch_fidelity")}
TORCH_FLOOR = (2, 6)
# diffusers 0.42 calls torch.accelerator, which torch gained in 2.6
DIFFUSERS_NEEDING_ACCELERATOR = (0, 42)


class MissingExtra(InputError):
    """An optional feature whose package is not installed (exit 2)."""


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """The imported `module`, or MissingExtra naming `pip install 'flatgen[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but broken inside: not a missing extra
        what = feature or f"this feature ({extra})"
        raise MissingExtra(f"{what} needs the {top} package: pip install 'flatgen[{extra}]'") \
            from None


def _version(text: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def installed(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_problem(torch: str | None, diffusers: str | None) -> str | None:
    """One line naming what cannot work with these versions, or None."""
    t, d = _version(torch), _version(diffusers)
    if t is None:
        return None
    floor = ".".join(map(str, TORCH_FLOOR))
    if t < TORCH_FLOOR and d is not None and d >= DIFFUSERS_NEEDING_ACCELERATOR:
        return (f"torch {torch} with diffusers {diffusers} cannot run (diffusers >= 0.42 needs "
                f"torch.accelerator, torch >= 2.6): pip install 'torch>={floor}'")
    if t < TORCH_FLOOR:
        return f"flatgen needs torch >= {floor}, found {torch}: pip install 'torch>={floor}'"
    return None


def check_versions() -> None:
    """InputError naming an incompatible torch / diffusers pair (call at start-up)."""
    problem = version_problem(installed("torch"), installed("diffusers"))
    if problem:
        raise InputError(problem)
