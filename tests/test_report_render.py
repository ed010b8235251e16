"""report.html renders in a real browser (headless Chromium) without errors.

CI installs Debian's chromium and sets FLATGEN_REQUIRE_BROWSER=1, so there the test cannot skip.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
from rich.console import Console

from flatgen.records import (
    ATTACK_INIT_L2,
    ATTACK_INIT_L2_FLIP,
    ATTACK_INIT_LINF,
    ATTACK_INIT_LINF_FLIP,
    ATTACK_XT_L2_T100,
    ATTACK_XT_L2_T500,
    ATTACK_XT_LINF_T100,
    ATTACK_XT_LINF_T500,
    NOISE_WEIGHTS,
    QUANT_W_CHANNEL,
    QUANT_W_TENSOR,
    QUANT_WA_CHANNEL,
    QUANT_WA_TENSOR,
    STEPS_ADM,
    STEPS_DDIM,
    ReportMeta,
)
from flatgen.report.claims import evaluate_claims
from flatgen.report.html import write_report
from flatgen.study import run_study
from flatgen.study.collect import collect_study
from flatgen.study.config import StudyConfig

BROWSER = (shutil.which("chromium") or shutil.which("chromium-browser")
           or shutil.which("google-chrome"))


NEEDS_BROWSER = pytest.mark.skipif(
    BROWSER is None and not os.environ.get("FLATGEN_REQUIRE_BROWSER"),
    reason="no headless Chromium here (CI installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@NEEDS_BROWSER
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
        [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000",
         f"--screenshot={png}", (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000  # a page, not a blank


def every_claim_rows() -> list[dict]:
    """Rows with data for every registered claim: 4 methods x 2 seeds, the longest verdicts."""
    steps, bits, eps = [50, 20, 10, 5, 3], [8, 6, 4, 3], [0.01, 0.02, 0.05, 0.1, 0.2]
    rows = []
    for i, m in enumerate(["adm", "ema", "sam", "sam+ema"]):
        for seed in range(2):
            x = 1.0 + 0.1 * i + 0.01 * seed

            def lad(levels, values):
                return {"levels": levels, "clean": 1.0, "values": values, "select_clean": 1.0,
                        "select_values": values}

            ladders = {k: lad(steps, [1.0, 1.1, 1.3 * x, 2 * x, 4 * x])
                       for k in (STEPS_ADM, STEPS_DDIM)}
            ladders |= {k: lad(bits, [1.0, 1.1, 1.2, 1.24])  # never degrades: untestable
                        for k in (QUANT_W_TENSOR, QUANT_W_CHANNEL, QUANT_WA_TENSOR,
                                  QUANT_WA_CHANNEL)}
            ladders |= {k: lad(eps, [1.1, 1.3, 1.6 * x, 2 * x, 3 * x])
                        for k in (ATTACK_XT_LINF_T100, ATTACK_XT_LINF_T500, ATTACK_XT_L2_T100,
                                  ATTACK_XT_L2_T500, ATTACK_INIT_LINF, ATTACK_INIT_L2,
                                  NOISE_WEIGHTS)}
            ladders |= {k: {**lad(eps, [0.0, 0.1 * x, 0.2 * x, 0.4 * x, 0.6]), "clean": 0.0,
                            "select_clean": 0.0}
                        for k in (ATTACK_INIT_LINF_FLIP, ATTACK_INIT_L2_FLIP)}
            metrics = {k: x for k in ("lambda_max", "hessian_trace", "loss_increase_worst@0.1",
                                      "exposure_gap_l2@T20", "exposure_gap_sq@T20", "w2@T20")}
            rows.append({"method": m, "seed": seed, "metrics": metrics | {"ladders": ladders}})
    return rows


@NEEDS_BROWSER
def test_verdict_table_fits_a_1280x800_window(tmp_path):
    assert BROWSER, "FLATGEN_REQUIRE_BROWSER is set but no chromium is installed"
    methods = ("adm", "ema", "sam", "sam+ema")
    meta = ReportMeta(name="fit", data="digits", methods=methods, seeds=(0, 1))
    rows = every_claim_rows()
    claims = evaluate_claims(rows, methods=methods, steps=[20, 100])
    assert len(claims) >= 11  # every registered claim has data here
    page = tmp_path / "report.html"
    write_report(page, meta=meta, table=(["method"], [["adm"]]), claims=claims, plots={},
                 missing=[], rows=rows)
    # measure the verdict table where it lands in the window, and write it into the title
    probe = ("<script>addEventListener('load', () => {const r = document.getElementById("
             "'verdicts').getBoundingClientRect(); document.title = 'BOX' + JSON.stringify("
             "[r.left, r.top, r.right, r.bottom]);});</script></body>")
    page.write_text(page.read_text().replace("</body>", probe))
    proc = subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r"BOX(\[[^\]]*\])", proc.stdout)
    assert found, proc.stdout[:2000]
    left, top, right, bottom = json.loads(found.group(1))
    assert 0 <= left and right <= 1280 and 0 <= top and bottom <= 800, (left, top, right, bottom)
