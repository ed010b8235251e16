"""Safe file output: atomic writes, strict JSON, and output-path checks made before any work."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flatgen.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain open() gives a new file: 0666 minus the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain mkdir() gives a new folder: 0777 minus the umask."""
    return 0o777 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) and move the result onto path, so readers never see a partial file.

    The file gets the permissions a plain open() would give it (0666 minus the umask), not
    mkstemp's private 0600, so results can be shared like any other output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def strict_json(obj: Any) -> Any:
    """obj with every non-finite float replaced by None, so json.dumps writes strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON that every parser reads: NaN and infinities become null."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_writable(path: str | Path, what: str = "--out") -> None:
    """OutputError unless files can be created at `path` (a folder, existing or not).

    Probes by creating and removing an empty file in the nearest existing folder, so a
    read-only filesystem or a missing permission is found before any work starts.
    """
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise OutputError(f"{what} {str(path)!r}: {str(base)!r} is a file, not a folder: "
                          f"choose another {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".flatgen-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise OutputError(
            f"cannot write to {str(base)!r} ({reason}): choose another {what}") from None


def check_new_file(path: str | Path, *, force: bool, what: str = "--out") -> None:
    """OutputError unless a file may be written at `path`: not a folder, not an existing file
    (unless force), in a writable folder."""
    path = Path(path)
    if path.is_dir():
        example = str(path / "samples.png")
        raise OutputError(f"{what} {str(path)!r} is a folder: give a file name, e.g. {example!r}")
    if path.exists() and not force:
        raise OutputError(f"{what} {str(path)!r} exists: pass --force to overwrite it, "
                          f"or choose another {what}")
    check_writable(path.parent, what)


def is_empty_dir(path: Path) -> bool:
    """A folder holding nothing but temporaries that flatgen's atomic writes leave when killed."""
    return path.is_dir() and all(p.name.startswith(".") and p.name.endswith(".tmp")
                                 for p in path.iterdir())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.NAME.XXXX.tmp` files that a process killed inside atomic_write left."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
