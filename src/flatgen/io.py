"""Safe file output: atomic writes, strict JSON, and output-path checks made before any work."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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


# a run directory holds this file, written by flatgen before anything else: a folder is a run
# only if flatgen made it one (a user's folder with a config.yaml of its own is not)
RUN_MARKER = ".flatgen-run"
RUN_LOCK = ".flatgen-lock"
# atomic_write's temporaries: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def is_temporary(path: Path, names: tuple[str, ...] | None = None) -> bool:
    """Whether path is a temporary atomic_write left (of a file in `names`, if given)."""
    match = _TEMPORARY.match(path.name)
    return bool(match) and path.is_file() and (names is None or match["name"] in names)


def is_empty_dir(path: Path, own: tuple[str, ...] = ("config.yaml", RUN_MARKER)) -> bool:
    """A folder holding nothing, or only the temporaries of the files in `own` that a process
    killed inside atomic_write left. Hidden files are content like any other."""
    return path.is_dir() and all(is_temporary(p, own) for p in path.iterdir())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the `.NAME.XXXXXXXX.tmp` files that a process killed inside atomic_write left."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if is_temporary(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def is_run_dir(path: Path) -> bool:
    """A flatgen run: its marker and config.yaml, or (written before the marker existed) a
    config.yaml beside a checkpoint flatgen wrote (checkpoints/*/trainer_state.*)."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        return False
    return (path / RUN_MARKER).is_file() or any(
        (path / "checkpoints").glob("*/trainer_state.*"))


def is_model_dir(path: Path) -> bool:
    """A diffusers pipeline or model folder (flatgen never writes into one)."""
    path = Path(path)
    return (path / "model_index.json").is_file() or (
        (path / "config.json").is_file()
        and any(path.glob("diffusion_pytorch_model*")))


def check_outside_runs(out: str | Path, *, own: str | Path | None = None,
                       what: str = "--out") -> None:
    """OutputError if `out` lies in a run directory or a model folder (itself or any folder
    above it), unless that folder is `own` (the run whose outputs these are)."""
    out = Path(out).resolve()
    own_dir = Path(own).resolve() if own is not None else None
    for folder in (out, *out.parents):
        if own_dir is not None and folder == own_dir:
            return
        if is_run_dir(folder):
            raise OutputError(f"{what} {str(out)!r} is inside the flatgen run {str(folder)!r}, "
                              "which holds only its own outputs: choose another " + what)
        if is_model_dir(folder):
            raise OutputError(f"{what} {str(out)!r} is inside the model folder {str(folder)!r}, "
                              "which flatgen never writes into: choose another " + what)


# ---------------------------------------------------------------- YAML input

MAX_YAML_DEPTH = 64  # no config nests deeper than a handful of levels
MAX_YAML_NODES = 200_000  # and none holds more values: refuses alias bombs before they expand


class YAMLInputError(ValueError):
    """A YAML text that cannot be used as input; one line, without the file name."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (where SafeLoader keeps the
    last silently): the one loader every config, study and results file is read with."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader says so below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's floats: `1e-3` is a number (YAML 1.1, and so SafeLoader, reads it as a string,
# which strict validation would then refuse)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _check_shape(data: Any) -> None:
    """YAMLInputError if data nests deeper than MAX_YAML_DEPTH or holds over MAX_YAML_NODES
    values (aliases count each time they are used)."""
    stack, count = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_YAML_DEPTH:
            raise YAMLInputError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        if count > MAX_YAML_NODES:
            raise YAMLInputError(f"holds more than {MAX_YAML_NODES} values")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, (list, tuple, set)):
            stack.extend((v, depth + 1) for v in node)


def load_yaml(text: str) -> Any:
    """The value a YAML text holds, read with StrictLoader; YAMLInputError (one line) if it is
    not valid YAML, repeats a key, uses an unknown tag, or nests too deep."""
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise YAMLInputError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    except yaml.YAMLError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        problem = getattr(err, "problem", None) or (lines[0] if lines else type(err).__name__)
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise YAMLInputError(f"{problem}{where}") from None
    _check_shape(data)
    return data


def read_json_object(path: str | Path, what: str = "results file", *,
                     infinities: bool = False) -> dict:
    """The JSON object a file holds; InputError (one line naming the file) if it cannot be read,
    is not strict JSON (NaN is not), nests too deep, or is not an object. For files flatgen
    wrote and reads back (a study's results, for --collect). infinities: accept the Infinity,
    -Infinity and NaN that Python's json writes (a study's results may hold an infinite
    robust level)."""
    from flatgen.errors import InputError

    path = Path(path)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        data = json.loads(path.read_text(), parse_constant=None if infinities else refuse)
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise InputError(f"{what} {str(path)!r} cannot be read ({reason})") from None
    except RecursionError:
        raise InputError(f"{what} {str(path)!r} nests too deep") from None
    except ValueError as err:
        raise InputError(f"{what} {str(path)!r} is not valid JSON ({err}): delete it and "
                         "measure again") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {str(path)!r} must hold a JSON object: delete it and "
                         "measure again")
    try:
        _check_shape(data)
    except YAMLInputError as err:
        raise InputError(f"{what} {str(path)!r} {err}") from None
    return data


# the keys of a config that name files: read from the config file's own folder
CONFIG_PATH_KEYS = (("data", "path"), ("model", "pretrained"))


def resolve_config_paths(data: dict, config_file: str | Path) -> dict:
    """`data.path` and `model.pretrained` of a config file, made absolute from the file's own
    folder (as docker-compose reads paths), so a config means the same from any working
    directory. A run's own config.yaml (next to RUN_MARKER) is left as written: new runs
    store absolute paths, and older ones were written against their working directory."""
    folder = Path(config_file).parent
    if (folder / RUN_MARKER).exists():
        return data
    for section, key in CONFIG_PATH_KEYS:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str) and sec[key]:
            value = Path(sec[key]).expanduser()
            if not value.is_absolute():
                sec[key] = os.path.abspath(folder / value)
    return data
