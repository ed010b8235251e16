"""Training throughput of the digits U-Net preset through the real training loop.

    .venv/bin/python benchmarks/train_speed.py [--steps 200] [--threads 2]

Prints it/s for the baseline (AdamW) and SAM, measured side by side after a warm-up, and the
machine it ran on. Background load slows both alike; compare ratios across machines, not it/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from flatgen.config import build_config
from flatgen.train import train


def measure(preset: str, steps: int, warmup: int) -> float:
    """it/s over `steps` steps after `warmup` steps, from the trainer's own step callback."""
    cfg = build_config({}, [f"method.preset={preset}", f"train.steps={warmup + steps}",
                            "train.ckpt_every=100000", "train.log_every=100000"])
    marks: dict[int, float] = {}

    def on_step(step: int, loss: float) -> None:
        if step in (warmup, warmup + steps):
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, os.path.join(tmp, "run"), progress=False, on_step=on_step)
    return steps / (marks[warmup + steps] - marks[warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__}, {args.threads} threads; digits U-Net preset, batch 128")
    adam = measure("adm", args.steps, args.warmup)
    sam = measure("sam", args.steps, args.warmup)
    print(f"AdamW: {adam:.2f} it/s   SAM: {sam:.2f} it/s   "
          f"SAM step time / AdamW step time: {adam / sam:.2f}x")


if __name__ == "__main__":
    main()
