"""`flatgen demo`: the embedded default job on the digits, end to end on a CPU."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from flatgen.config import build_config
from flatgen.diffusion import generate
from flatgen.evaluate import evaluate_quality
from flatgen.io import write_json_atomic
from flatgen.report.images import save_samples_png
from flatgen.train import load_run, train

DEMO_STEPS = {"quick": 400, "full": 1500}


def demo_config(quick: bool, method: str = "adm"):
    steps = DEMO_STEPS["quick" if quick else "full"]
    return build_config({
        "method": {"preset": method},
        "train": {"steps": steps, "warmup_steps": min(100, steps // 10), "ckpt_every": 250},
    })


def run_demo(out: Path, quick: bool, console: Console, quality_table: Callable) -> dict:
    """Train the baseline on digits (or reuse a finished run in `out`), evaluate, write samples."""
    t0 = time.perf_counter()
    run_dir = out / "runs" / "adm"
    cfg = demo_config(quick)
    if (run_dir / "train_summary.json").is_file() and not _interrupted(run_dir):
        console.print(f"reusing the finished run in {run_dir}")
    else:
        resume = (run_dir / "checkpoints" / "last").exists()
        train(cfg, run_dir, resume=resume)
    run = load_run(run_dir)
    result = evaluate_quality(run, ("raw",), (10, 100), ("adm", "ddim"))
    write_json_atomic(run_dir / "eval" / "quality.json", result)
    _, test = run.data()
    samples = generate(run.model("raw"), run.schedule, 64, tuple(test.shape[1:]), 100, "adm", seed=0)
    png = save_samples_png(samples, out / "samples_adm_T100.png")
    console.print(quality_table(result, "digits baseline: sample quality (lower is better)"))
    seconds = time.perf_counter() - t0
    summary = {"seconds": round(seconds, 1), "quick": quick, "quality": result, "samples": str(png)}
    write_json_atomic(out / "demo.json", summary)
    console.print(f"samples: {png}\nresults: {out / 'demo.json'}\nwall time: {seconds:.0f} s")
    return summary


def _interrupted(run_dir: Path) -> bool:
    import json

    return bool(json.loads((run_dir / "train_summary.json").read_text()).get("interrupted"))
