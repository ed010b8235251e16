"""The per-seed cost of the demo study in U, split by stage.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study_speed.py [--quick] [--out DIR]

U is one forward of the digits U-Net preset on a batch of 128 (no gradient), timed in this
script, so the cost is a ratio that moves little from machine to machine. One seed of the demo
(flatgen.study.demo.demo_study; --quick: the quick demo) is trained and measured through the
study engine's own functions (DIFFUSION.train_unit, DIFFUSION.measure), with the CPU time
(time.process_time) of each stage recorded: training per unit, quality, flatness (lambda_max,
trace and perturbation curves), the expansion check, and each robustness suite. It prints the
stages in U, what the cost model of `flatgen study --plan` (flatgen.study.plan) predicted, the
load average and OMP_NUM_THREADS; its last line reads `per-seed cost: N U`. The full default
takes about 20 minutes of one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import load, machine
from rich.console import Console

import flatgen.study.measure as measure_module
from flatgen.robustness.suites import SUITES
from flatgen.study.config import unit_config
from flatgen.study.demo import demo_study
from flatgen.study.diffusion import DIFFUSION
from flatgen.study.plan import BATCH_U, calibrate, estimate_costs, plan_units

SPENT: dict[str, float] = defaultdict(float)  # stage -> CPU seconds, summed over the seed


def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[stage] += time.process_time() - t0
    return wrapper


def unit_u() -> float:
    """CPU seconds of one U: the median of 7 forwards of the digits U-Net preset on 128 images,
    after two untimed ones."""
    from flatgen.models import build_model

    model = build_model("unet-digits", (1, 8, 8)).eval()
    x, t = torch.randn(BATCH_U, 1, 8, 8), torch.randint(0, 1000, (BATCH_U,))
    times = []
    with torch.no_grad():
        for i in range(9):
            t0 = time.process_time()
            model(x, t)
            if i >= 2:
                times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def instrument() -> None:
    """Wrap the measurement's stages (module globals measure_method calls) and every suite."""
    measure_module._quality = timed("quality", measure_module._quality)
    measure_module._sharpness = timed("flatness", measure_module._sharpness)
    measure_module._expansion = timed("expansion check", measure_module._expansion)
    for name, suite in SUITES.items():
        suite.run = timed(f"robustness: {name}", suite.run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick demo's config")
    parser.add_argument("--out", type=Path, help="keep the study here (default: a temp dir)")
    args = parser.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads else 1)
    print(f"machine: {machine()}; load before: {load()}; OMP_NUM_THREADS={threads}; "
          f"torch threads {torch.get_num_threads()}")
    u = unit_u()
    print(f"U (digits U-Net forward, batch {BATCH_U}): {u * 1e3:.1f} ms CPU")
    study = demo_study(args.quick, seeds=1)
    forward_s, step_u = calibrate(study)
    predicted = estimate_costs(study, calibrate_here=False)
    instrument()
    console = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        measured = {}
        for unit in plan_units(study):
            t0 = time.process_time()
            DIFFUSION.train_unit(study, out, unit, console=console, progress=False)
            SPENT[f"training {unit.base}"] += time.process_time() - t0
            before = sum(SPENT.values())
            for method in unit.methods:
                t0 = time.process_time()
                DIFFUSION.measure(study, out, unit, method=method, progress=False)
                SPENT[f"measure, other ({method})"] += (time.process_time() - t0) - (
                    sum(SPENT.values()) - before)
                before = sum(SPENT.values())
            measured[unit.name] = unit
    print(f"load after: {load()}")
    print(f"{'stage':<34}{'CPU s':>10}{'U':>10}")
    for stage, seconds in SPENT.items():
        print(f"{stage:<34}{seconds:>10.1f}{seconds / u:>10.0f}")
    train_u = sum(s for k, s in SPENT.items() if k.startswith("training")) / u
    total_u = sum(SPENT.values()) / u
    model_train = sum(step_u[unit.base] * unit_config(study, unit.base, unit.seed).train.steps
                      for unit in measured.values())
    model_measure = sum(predicted[n].measure_u for n in measured)
    print(f"cost model: training {model_train:.0f} U predicted (calibrated steps; U there "
          f"{forward_s * 1e3:.1f} ms CPU) vs {train_u:.0f} U measured; measurement "
          f"{model_measure:.0f} U counted vs {total_u - train_u:.0f} U measured "
          f"(measured / counted = {(total_u - train_u) / model_measure:.2f})")
    print(f"per-seed cost: {total_u:.0f} U")


if __name__ == "__main__":
    main()
