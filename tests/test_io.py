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
