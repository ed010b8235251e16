"""flatgen's training loop against a plain PyTorch loop of the same U-Net, data, batch, AdamW and
gradient clipping, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py [--steps 300] [--block 25]

The real `flatgen.train.train` runs configs/digits-quick.yaml (its log_every and ckpt_every
kept, so its metrics lines and checkpoint writes are timed); its on_step callback hands the
thread to the plain loop every `--block` steps, which then runs as many steps. Blocks of the
two interleave after a warm-up of both, so background load on a shared machine slows both alike;
the ratio is what to compare, not the it/s. The final checkpoint, loss curve and summary are
paid once per run and are printed apart ("end of run").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from flatgen.config import load_config
from flatgen.data import load_dataset
from flatgen.diffusion import schedule_from_config
from flatgen.models import model_from_config
from flatgen.train import train

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_threads_option, load, machine  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits-quick.yaml"


class PlainLoop:
    """The loop anyone would write: random batch, eps-MSE, backward, clip, AdamW step."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        torch.manual_seed(cfg.train.seed + 1)
        self.x, _ = load_dataset(cfg.data)
        self.schedule = schedule_from_config(cfg.diffusion)
        self.model = model_from_config(cfg.model, tuple(self.x.shape[1:])).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                     weight_decay=cfg.train.weight_decay)
        self.batch, self.clip = cfg.train.batch_size, cfg.train.grad_clip

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) for `steps` steps."""
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            x0 = self.x[torch.randint(len(self.x), (self.batch,))]
            t = torch.randint(self.schedule.timesteps, (self.batch,))
            noise = torch.randn_like(x0)
            x_t = self.schedule.add_noise(x0, noise, t)
            loss = (self.model(x_t, t) - noise).pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
        return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps of each loop")
    parser.add_argument("--block", type=int, default=25, help="steps per interleaved block")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps of each loop")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides; train.compile=true compiles flatgen's loop "
                        "only (the plain loop stays eager): the compile speed-up")
    parser.add_argument("--progress", action="store_true",
                        help="show flatgen's progress bar, as `flatgen train` does")
    add_threads_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    blocks = max(1, args.steps // args.block)
    total = args.warmup + blocks * args.block
    cfg = load_config(CONFIG, overrides=[f"train.steps={total}", *args.set])
    print(f"machine: {machine()}; load {load()}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads {torch.get_num_threads()}"
          f"; torch {torch.__version__}")
    print(f"{CONFIG.name} (batch {cfg.train.batch_size}, log_every {cfg.train.log_every}, "
          f"ckpt_every {cfg.train.ckpt_every}): {args.warmup} warm-up steps, then {blocks} "
          f"blocks of {args.block} steps of each loop, interleaved")

    plain = PlainLoop(cfg)
    flat: list[tuple[float, float]] = []  # (wall, CPU) seconds per block
    other: list[tuple[float, float]] = []
    mark = [(0.0, 0.0)]

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def on_step(step: int, loss: float) -> None:
        now = clocks()
        if step == args.warmup:
            plain.run(args.warmup)
        elif step > args.warmup and (step - args.warmup) % args.block == 0:
            flat.append((now[0] - mark[0][0], now[1] - mark[0][1]))
            other.append(plain.run(args.block))
        else:
            return
        mark[0] = clocks()  # flatgen's clocks restart when the plain block is done

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=args.progress, on_step=on_step)
        tail = time.perf_counter() - mark[0][0]
    n = blocks * args.block
    for i, clock in enumerate(("wall", "CPU")):
        f_rate, p_rate = n / sum(b[i] for b in flat), n / sum(b[i] for b in other)
        # per block: flatgen it/s over plain it/s
        per_block = [p[i] / f[i] for f, p in zip(flat, other, strict=True)]
        print(f"{clock:>4} time: flatgen loop {f_rate:.2f} it/s, plain loop {p_rate:.2f} it/s: "
              f"ratio {f_rate / p_rate:.3f}x (blocks {min(per_block):.2f}-{max(per_block):.2f})")
    print(f"end of run (final checkpoint, loss curve, summary): {tail:.2f} s wall; "
          f"load {load()}")


if __name__ == "__main__":
    main()
