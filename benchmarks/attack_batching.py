"""The x_t and x_T attacks batched over eps levels and noise streams, against the same attacks
one (stream, eps) per call (how the suite ran them before), and the DDIM steps ladder's two
streams sampled in one stacked call against one call per stream, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attack_batching.py [--pgd-steps 5] [--rounds 3]
        [--parts x_t,x_T,ddim]

The digits U-Net (unet-digits, random init: the cost does not depend on the weights) is
attacked at the suite's default sizes: x_t on 64 test-sized images at one timestep, 6 eps
levels, 2 streams; x_T on 32 initial noises through a 5-step DDIM chain, 6 eps levels, 2
streams; batch size 256 (the suite's default). PGD steps default to 5 instead of the suite's 20
to keep the run short: the cost is the same per step either way. Rounds alternate the two ways
(A B A B ...), so a change in the machine's load hits both; the ratio is the median over rounds.
Both ways give the same numbers to float rounding (tests/test_robustness_streams.py checks it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import add_threads_option, load, machine  # benchmarks/_common.py

from flatgen.diffusion import NoiseSchedule
from flatgen.models import build_model
from flatgen.robustness.attack_input import xt_attack_rows
from flatgen.robustness.attack_noise import xT_attack_rows
from flatgen.robustness.record import pgd_settings
from flatgen.robustness.steps import generate, generate_streams
from flatgen.robustness.util import evaluating

EPS_LINF = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
INIT_EPS_LINF = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pgd-steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--parts", default="x_t,x_T,ddim", help="comma-separated: x_t,x_T,ddim")
    add_threads_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    schedule = NoiseSchedule("linear", 1000)
    model = build_model("unet-digits", (1, 8, 8))
    g = torch.Generator().manual_seed(0)
    images = {s: torch.randn(64, 1, 8, 8, generator=g).clamp(-1, 1) for s in ("main", "select")}
    noises = {s: torch.randn(32, 1, 8, 8, generator=g) for s in ("main", "select")}
    xt = pgd_settings(norm="linf", steps=args.pgd_steps, restarts=1, step_factor=2.5,
                      zero_first=True)
    xT = pgd_settings(norm="linf", steps=args.pgd_steps, restarts=1, step_factor=2.5,
                      zero_first=False)
    chain = {"steps": 5, "clip": None}
    bs = args.batch_size

    def xt_batched() -> None:
        xt_attack_rows(model, schedule, images, t=100, levels=EPS_LINF, attack=xt, seed=0,
                       batch_size=bs)

    def xt_alone() -> None:
        for s, x in images.items():
            for e in EPS_LINF:
                xt_attack_rows(model, schedule, {s: x}, t=100, levels=[e], attack=xt, seed=0,
                               batch_size=bs)

    def xT_batched() -> None:  # noqa: N802
        xT_attack_rows(model, schedule, noises, levels=INIT_EPS_LINF, attack=xT, chain=chain,
                       seed=0, batch_size=bs)

    def xT_alone() -> None:  # noqa: N802
        for s, x in noises.items():
            for e in INIT_EPS_LINF:
                xT_attack_rows(model, schedule, {s: x}, levels=[e], attack=xT, chain=chain,
                               seed=0, batch_size=bs)

    gen = {"shape": (1, 8, 8), "n": 128, "steps": 20, "seed": 0, "batch_size": bs}

    def ddim_stacked() -> None:
        generate_streams(model, schedule, streams=["verdict", "select"], **gen)

    def ddim_alone() -> None:
        for s in ("verdict", "select"):
            generate(model, schedule, sampler="ddim", stream=s, **gen)

    print(f"machine: {machine()}; torch {torch.__version__}; threads {args.threads}; "
          f"load before: {load()}")
    print(f"pgd steps {args.pgd_steps}, batch size {bs}, rounds {args.rounds}")
    with evaluating(model, freeze=True):
        parts = {"x_t": ("x_t", xt_alone, xt_batched), "x_T": ("x_T", xT_alone, xT_batched),
                 "ddim": ("DDIM streams", ddim_alone, ddim_stacked)}
        for key in args.parts.split(","):
            name, alone, batched = parts[key]
            t_alone, t_batched = [], []
            for _ in range(args.rounds):
                for fn, times in ((alone, t_alone), (batched, t_batched)):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
            ratios = [a / b for a, b in zip(t_alone, t_batched, strict=True)]
            print(f"{name}: one (stream[, eps]) per call {statistics.median(t_alone):.2f} s, "
                  f"batched {statistics.median(t_batched):.2f} s, speed-up "
                  f"{statistics.median(ratios):.2f}x (per round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
