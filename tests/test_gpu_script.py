"""benchmarks/gpu.sh: valid bash, and a CPU dry run that lists every benchmark and parses it."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_gpu_script_syntax_and_dry_run(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("[dry-run] ") and "limit" in line for line in lines) == 8
    assert any("--optimizer sam" in line and "bfloat16" in line for line in lines)
    assert lines[-1] == "[dry-run] all 8 benchmark scripts parse"
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
