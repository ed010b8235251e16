"""Every parser refuses every wrong type in one line with exit 2 (issue 20, item 1).

Each parser (`--set`, a training config file, a study config file, a DRO config file) is fed
values of every wrong kind at keys of each type: a list, a mapping, null, a boolean, a string, a
huge integer, NaN, a document nested 3,000 deep, YAML tags (one that would run a command under
an unsafe loader), truncated flow collections and a repeated key. Each must exit 2 with at most
two stderr lines, no traceback, the file and key named, and nothing written.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.failure_world import invoke

pytestmark = pytest.mark.usefixtures("one_thread")

DEEP = "[" * 3000 + "]" * 3000
WRONG = {
    "list": "[1]",
    "mapping": "{a: 1}",
    "null": "null",
    "bool": "true",
    "string": "zzz",
    "huge-int": "1000000000000000000000000",
    "nan": ".nan",
    "deep": DEEP,
    "python-tag": "!!python/object/apply:os.system [touch PWNED]",
    "unknown-tag": "!foo 1",
    "truncated-list": "[1,",
    "truncated-map": "{a: 1",
    "duplicate-key": "{a: 1, a: 1}",
}
# the value kinds that a key's type accepts, so they are not wrong there
FLOAT_OK = ("huge-int",)  # a float may be any finite size (a huge lr diverges: exit 1)
TOY = "data: {name: toy2d, n_train: 64, n_test: 16}\nmodel: {preset: mlp2d}\n"

TRAIN_KEYS = {  # key: kinds it accepts
    "train.steps": (), "train.batch_size": (), "train.seed": (), "train.grad_accum": (),
    "train.lr": FLOAT_OK, "data.name": (), "method.preset": ("null",), "model.dropout": ("null",),
    "diffusion.timesteps": (), "method.sam.rho": FLOAT_OK, "train.lr_decay": (),
}
STUDY_KEYS = {  # study config keys (dotted) and the kinds they accept
    "seeds": ("list",), "name": ("string",), "methods": (), "base.train.steps": (),
    "evaluations.n_samples": ("null",), "overrides": (), "verdicts.alpha": (),
}
DRO_KEYS = {"train.iters": (), "seeds": ("list",), "train.betas": (), "game.gamma": FLOAT_OK}


def _cases(keys: dict[str, tuple[str, ...]]) -> list:
    return [pytest.param(key, kind, id=f"{key}={kind}")
            for key, ok in keys.items() for kind in WRONG if kind not in ok]


def _nest(key: str, value: str) -> str:
    """`a.b.c` and a YAML value as block mappings: a:, b: under it, c: VALUE under that."""
    parts = key.split(".")
    lines = [f"{'  ' * i}{p}:" for i, p in enumerate(parts)]
    return "\n".join(lines) + " " + value


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(tmp_path: Path, args: list, *names: str) -> str:
    before = _snapshot(tmp_path)
    result = invoke(*args)
    stderr = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert 1 <= len(stderr) <= 2 and "Traceback" not in result.output, result.output
    assert stderr[0].startswith("error: ")
    for name in names:
        assert name in stderr[0], stderr[0]
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not (tmp_path / "out").exists() and not Path("PWNED").exists()
    return stderr[0]


def _key_named(kind: str) -> bool:
    # a YAML-level error (syntax, tag, depth, repeated key) names the line, not the key
    return kind not in ("deep", "python-tag", "unknown-tag", "truncated-list", "truncated-map",
                        "duplicate-key")


@pytest.mark.parametrize("key, kind", _cases(TRAIN_KEYS))
def test_set_refuses(tmp_path, key, kind):
    config = tmp_path / "toy.yaml"
    config.write_text(TOY)
    _refused(tmp_path, ["train", config, "--out", tmp_path / "out",
                        "--set", f"{key}={WRONG[kind]}"], key)


@pytest.mark.parametrize("key, kind", _cases(TRAIN_KEYS))
def test_training_config_refuses(tmp_path, key, kind):
    config = tmp_path / "c.yaml"
    section = key.split(".")[0]
    toy = [line for line in TOY.splitlines(keepends=True) if not line.startswith(section)]
    config.write_text("".join(toy) + _nest(key, WRONG[kind]) + "\n")
    line = _refused(tmp_path, ["train", config, "--out", tmp_path / "out"], str(config))
    if _key_named(kind):
        assert key in line, line


@pytest.mark.parametrize("key, kind", _cases(STUDY_KEYS))
def test_study_config_refuses(tmp_path, key, kind):
    study = tmp_path / "s.yaml"
    base = "{data: {name: toy2d, n_train: 64, n_test: 16}, model: {preset: mlp2d}}"
    head = "" if key.startswith("base.") else f"base: {base}\nmethods: [adm]\n"
    study.write_text(head + _nest(key, WRONG[kind]) + "\n")
    line = _refused(tmp_path, ["study", study, "--out", tmp_path / "out", "--plan"], str(study))
    if _key_named(kind):
        assert key.split(".")[-1] in line, line


@pytest.mark.parametrize("key, kind", _cases(DRO_KEYS))
def test_dro_config_refuses(tmp_path, key, kind):
    config = tmp_path / "d.yaml"
    config.write_text("datasets: [{kind: toy2d, name: moons}]\n" + _nest(key, WRONG[kind]) + "\n")
    line = _refused(tmp_path, ["dro", config, "--out", tmp_path / "out"])
    assert key.split(".")[-1] in line or str(config) in line, line


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("# a comment\n", "is empty"),
    ("name: ../../x\nmethods: [adm]\n", "name: String should match pattern"),
    ("name: a/b\nmethods: [adm]\n", "name: String should match pattern"),
    ("methods: [sam]\noverrides: {sma: ['method.sam.rho=0.5']}\n",
     r"overrides: 'sma' is not a base trajectory"),
    ("methods: [sam]\noverrides: {sam: ['method.sam.rhoo=0.5']}\n", "method.sam.rhoo"),
    ("methods: [adm]\nmethods: [sam]\n", "duplicate key 'methods'"),
])
def test_study_files_refused(tmp_path, text, message):
    study = tmp_path / "s.yaml"
    study.write_text(text)
    line = _refused(tmp_path, ["study", study, "--out", tmp_path / "out", "--plan"], str(study))
    assert re.search(message, line), line
