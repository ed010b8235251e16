"""`import flatgen.config` loads no torch: validating a training config, and the command line's
first answers, wait for no 5-second import. Checked in a fresh interpreter, where nothing has
loaded torch yet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return set(out.stdout.split())


def test_import_flatgen_config_loads_no_torch():
    loaded = _modules_after("import flatgen.config")
    assert "flatgen.config" in loaded  # the check looks at the right interpreter
    assert "torch" not in loaded
    # the WRM section is a light model of its own; the algorithm stays in optim
    assert "flatgen.wrm_config" in loaded and "flatgen.optim" not in loaded


def test_the_check_sees_torch_where_it_is_loaded():
    assert "torch" in _modules_after("import flatgen.optim.wrm")
