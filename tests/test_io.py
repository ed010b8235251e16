"""Atomic writes leave ordinary files: the permissions a plain open() would give."""

import os
import stat

import pytest

from flatgen.io import write_text_atomic


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_respects_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = write_text_atomic(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_strict_json_writes_null_for_non_finite():
    import json

    from flatgen.io import dumps_strict

    text = dumps_strict({"loss": float("nan"), "g": [1.5, float("inf")], "n": 3})
    assert json.loads(text) == {"loss": None, "g": [1.5, None], "n": 3}


def test_output_checks(tmp_path, monkeypatch):
    import errno

    from flatgen.errors import OutputError
    from flatgen.io import check_new_file, check_writable

    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="exists: pass --force"):
        check_new_file(tmp_path / "a.png", force=False)
    check_new_file(tmp_path / "a.png", force=True)
    with pytest.raises(OutputError, match="is a folder"):
        check_new_file(tmp_path, force=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(tmp_path / "a.png" / "sub")
    check_writable(tmp_path / "new" / "deeper")  # the nearest existing folder is probed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # the probe is gone

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=r"cannot write to .* \(Read-only file system\)"):
        check_writable(tmp_path / "out")


@pytest.mark.parametrize("text, message", [
    ("{", "is not valid JSON"), ('{"a": NaN}', "NaN is not JSON"), ("[1]", "JSON object"),
    ("[" * 3000 + "]" * 3000, "nests too deep|JSON object"), ("\xff", "not valid JSON|cannot"),
    ('{"a": ' + "[" * 100 + "]" * 100 + "}", "nested more than 64"),
])
def test_results_files_refused_in_one_line(tmp_path, text, message):
    from flatgen.errors import InputError
    from flatgen.io import read_json_object

    path = tmp_path / "study_adm.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_json_object(path)
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1
    path.write_text('{"w2": 0.5}')
    assert read_json_object(path) == {"w2": 0.5}


def test_yaml_loader_refuses_what_safe_load_lets_through():
    from flatgen.io import YAMLInputError, load_yaml

    assert load_yaml("a: 1e-3\nb: [1, 2]\n") == {"a": 0.001, "b": [1, 2]}
    for text, message in [("a: 1\na: 2\n", "duplicate key 'a'"),
                          ("[" * 3000 + "]" * 3000, "nested more than"),
                          ("!!python/object/apply:os.system [true]", "constructor"),
                          ("a: [1,", "expected"),
                          # an alias bomb: 9 levels of 10 references each
                          ("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
                              f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                              for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
                           "more than 200000")]:
        with pytest.raises(YAMLInputError, match=message):
            load_yaml(text)


def test_empty_folders_and_runs(tmp_path):
    from flatgen.errors import OutputError
    from flatgen.io import RUN_MARKER, check_outside_runs, is_empty_dir, is_run_dir

    folder = tmp_path / "f"
    folder.mkdir()
    assert is_empty_dir(folder)
    (folder / ".config.yaml.ab12cd_9.tmp").write_text("")  # a killed atomic write of ours
    assert is_empty_dir(folder)
    (folder / ".x.tmp").write_text("")  # a user's hidden file
    assert not is_empty_dir(folder)
    (folder / "config.yaml").write_text("{}")
    assert not is_run_dir(folder)  # a user's config.yaml alone makes no run
    (folder / RUN_MARKER).write_text("{}")
    assert is_run_dir(folder)
    with pytest.raises(OutputError, match="inside the flatgen run"):
        check_outside_runs(folder / "a" / "b")
    check_outside_runs(folder / "eval", own=folder)  # the run's own outputs
    check_outside_runs(tmp_path / "elsewhere")
