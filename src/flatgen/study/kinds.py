"""The registry of study kinds, and the one place a study YAML's kind is chosen (its `task`).

To add a kind: write a module with its StudyKind (see study/kind.py; study/diffusion.py and
study/classifier.py are the two built in), register it in KINDS (`register_study_kind`), and
give it a report in study/collect.py (COLLECTORS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flatgen.config import ConfigError
from flatgen.io import YAMLInputError, load_yaml
from flatgen.registry import Registry
from flatgen.study.classifier import CLASSIFIER
from flatgen.study.diffusion import DIFFUSION
from flatgen.study.kind import StudyKind

KINDS: Registry[StudyKind] = Registry("study task")
DEFAULT_TASK = DIFFUSION.name  # a study YAML without `task`


def register_study_kind(kind: StudyKind) -> StudyKind:
    """Add `kind` to KINDS under its name (a name may be taken once)."""
    return KINDS.register(kind.name, kind)


for _kind in (DIFFUSION, CLASSIFIER):
    register_study_kind(_kind)


def study_kind(name: str) -> StudyKind:
    """The registered kind of that name (ConfigError naming the registered ones)."""
    if name not in KINDS:
        raise ConfigError(f"study task {name!r} is unknown: use one of {', '.join(KINDS)}")
    return KINDS.get(name)


def kind_of(study: Any) -> StudyKind:
    """The kind whose config model `study` is."""
    for kind in KINDS.values():
        if isinstance(study, kind.config):
            return kind
    raise TypeError(f"{type(study).__name__} is not the config of a registered study kind")


def task_of(path: str | Path) -> str:
    """The `task` a study YAML names (default diffusion). A missing or malformed file counts as
    the default, whose loader then reports the problem."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text()) if path.is_file() else None
    except (YAMLInputError, UnicodeDecodeError):
        return DEFAULT_TASK
    task = data.get("task", DEFAULT_TASK) if isinstance(data, dict) else DEFAULT_TASK
    return task if isinstance(task, str) else str(task)


def load_study(path: str | Path) -> Any:
    """The validated study config of a YAML file, of the kind its `task` names."""
    return study_kind(task_of(path)).load(Path(path))
