"""`flatgen demo --quick` against `flatgen train configs/digits-quick.yaml --set train.steps=300`,
side by side on this machine (issue 22 asks for at most 3x).

    .venv/bin/python benchmarks/quick_vs_train.py [--rounds 1]

Both commands run as the user runs them (fresh output folders, default threads and executor),
alternating train, demo, train, demo, ... so that background load touches both alike. Printed:
wall seconds and the CPU seconds of the command's processes (children's rusage), per command,
and the ratios demo / train. The wall ratio is the one asked for; the CPU ratio is steadier on
a shared machine.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import load, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLATGEN = [sys.executable, "-m", "flatgen.cli"]


def timed(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the children) of one command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"# {machine()}; load before {load()}")
    totals = {"train": [0.0, 0.0], "demo": [0.0, 0.0]}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            runs = {
                "train": [*FLATGEN, "train", "configs/digits-quick.yaml", "--set",
                          "train.steps=300", "--out", f"{tmp}/train{r}"],
                "demo": [*FLATGEN, "demo", "--quick", "--out", f"{tmp}/demo{r}"],
            }
            for name, cmd in runs.items():
                wall, cpu = timed(cmd)
                totals[name][0] += wall
                totals[name][1] += cpu
                print(f"round {r + 1} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU (load {load()})")
    (tw, tc), (dw, dc) = totals["train"], totals["demo"]
    print(f"demo --quick / train 300 steps: wall {dw / tw:.2f}x, CPU {dc / tc:.2f}x "
          f"(target: at most 3x wall)")


if __name__ == "__main__":
    main()
