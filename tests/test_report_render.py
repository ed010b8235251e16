"""report.html renders in a real browser (headless Chromium) without errors.

CI installs Debian's chromium and sets FLATGEN_REQUIRE_BROWSER=1, so there the test cannot skip.
"""

import os
import shutil
import subprocess

import pytest
from rich.console import Console

from flatgen.report import collect_study
from flatgen.study import run_study
from flatgen.study.config import StudyConfig

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(BROWSER is None and not os.environ.get("FLATGEN_REQUIRE_BROWSER"),
                    reason="no headless Chromium here (CI installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    assert BROWSER, "FLATGEN_REQUIRE_BROWSER is set but no chromium is installed"
    study = StudyConfig.model_validate({
        "name": "render",
        "base": {"train": {"steps": 3, "batch_size": 16, "warmup_steps": 0}},
        "methods": ["adm", "ema"],
        "evaluations": {"quality_steps": [2, 4], "n_samples": 16, "sharpness_batch": 16,
                        "trace_matvecs": 3, "suites": []},
    })
    run_study(study, tmp_path, Console(quiet=True), progress=False)
    collect_study(study, tmp_path)
    png = tmp_path / "report.png"
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000",
         f"--screenshot={png}", (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000  # a page, not a blank
