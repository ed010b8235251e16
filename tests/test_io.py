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
