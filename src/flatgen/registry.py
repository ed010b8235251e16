"""One registry type behind every extension point (SAM variants, suites, claims, datasets, model
and classifier presets, study kinds, collectors, executors).

A `Registry[T]` maps a name to an entry, in registration order (the built-ins first). It reads
like a dict (`name in reg`, `reg[name]`, iteration, `.values()`), refuses a name taken twice
unless asked to replace it, answers an unknown name with one line naming the choices, and lends
tests a temporary registration that is undone however the block ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind, e.g. `SUITES: Registry[Suite] = Registry("robustness suite")`."""

    def __init__(self, what: str, *, check: Callable[[T], None] | None = None) -> None:
        self.what = what  # how an entry is called in messages ("dataset", "SAM variant")
        self._check = check  # raises (TypeError/ValueError) for an entry that cannot be one
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name`; registering the same entry again is a no-op, another entry
        under a taken name is refused unless `replace`."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name to be registered")
        if self._check is not None:
            self._check(entry)
        old = self._entries.get(name)
        if old is not None and old is not entry and old != entry and not replace:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, default: object = ...) -> T:  # type: ignore[override]
        """The entry `name`; ValueError naming the choices (or `default` when one is given)."""
        if name in self._entries:
            return self._entries[name]
        if default is not ...:
            return default  # type: ignore[return-value]
        raise ValueError(f"unknown {self.what} {name!r}; choose from {', '.join(self._entries)}")

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    @contextmanager
    def temporary(self, name: str, entry: T) -> Iterator[T]:
        """Register `entry` for the duration of a with-block (tests' toy entries); whatever was
        registered under `name` before is put back."""
        before = self._entries.get(name)
        self.register(name, entry, replace=True)
        try:
            yield entry
        finally:
            if before is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = before

    # Mapping protocol: a registry reads like the dict it replaces
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"


__all__ = ["Registry"]
