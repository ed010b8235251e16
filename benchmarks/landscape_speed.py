"""A 2-D loss landscape evaluated point by point vs in vmap batches, side by side.

    .venv/bin/python benchmarks/landscape_speed.py            # 21x21 grid, ~7 min on 2 busy cores
    .venv/bin/python benchmarks/landscape_speed.py --quick    # 11x11 grid, smaller batch

For each model (the digits U-Net and the 2-D toy MLP) the same plane through the weights is
evaluated by
  - point by point, classic: write w + a d1 + b d2 into the model, call loss_fn(model)
    (what the public landscape tools do, minus their data loading);
  - flatgen losses_at, one by one (torch.func.functional_call, no weight copies);
  - flatgen losses_at, vmap over stacked weights, batch_points at a time;
  - flatgen losses_at, "auto" (the default: times both on the first batch, keeps the faster),
and the time ratios against the classic loop are printed with the largest difference in loss.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import add_threads_option, load, machine  # benchmarks/_common.py
from torch import nn

from flatgen.analysis import ParamSpace, analysis_mode, losses_at, random_direction
from flatgen.analysis.landscape import grid_coords
from flatgen.data import load_digits_split, sample_toy2d
from flatgen.diffusion import NoiseSchedule, fixed_diffusion_loss_fn
from flatgen.models import build_model


def classic(model: nn.Module, loss_fn, space: ParamSpace, dirs, coords) -> np.ndarray:
    """Point by point with the weights written into the model, restored afterwards."""
    w = space.flat()
    out = []
    with torch.no_grad():
        for c in coords:
            for p, x in zip(space.params, space.split(w + c.to(w.dtype) @ dirs), strict=True):
                p.copy_(x)
            out.append(float(loss_fn(model)))
        for p, x in zip(space.params, space.split(w), strict=True):
            p.copy_(x)
    return np.asarray(out)


def run(name: str, model: nn.Module, loss_fn, grid: int, batch_points: int) -> list[tuple]:
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([random_direction(model, g, bias="zero", space=space) for _ in range(2)])
    axis = torch.from_numpy(grid_coords(grid, 1.0))
    coords = torch.cartesian_prod(axis, axis)
    rows = []
    with analysis_mode(model):

        def flat(**kw):
            return lambda: losses_at(model, loss_fn, dirs, coords=coords, space=space, **kw)

        variants = [
            (
                "point by point (weights copied)",
                lambda: classic(model, loss_fn, space, dirs, coords),
            ),
            ("losses_at one by one", flat(vectorize=False)),
            (f"losses_at vmap x{batch_points}", flat(batch_points=batch_points, vectorize=True)),
            (f"losses_at auto x{batch_points}", flat(batch_points=batch_points)),
        ]
        base = None
        for label, fn in variants:
            t0 = time.perf_counter()
            vals = fn()
            dt = time.perf_counter() - t0
            if base is None:
                base = (vals, dt)
            diff = float(np.max(np.abs(vals - base[0]) / np.abs(base[0])))
            rows.append((name, label, dt, base[1] / dt, diff))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="11x11 grid and smaller batches")
    ap.add_argument("--grid", type=int, default=None, help="points per axis (21; quick 11)")
    ap.add_argument("--batch", type=int, default=None, help="digits in the fixed batch (128/32)")
    ap.add_argument("--batch-points", type=int, default=16, help="grid points per vmap call")
    add_threads_option(ap)
    args = ap.parse_args()
    grid = args.grid or (11 if args.quick else 21)
    batch = args.batch or (32 if args.quick else 128)
    n_toy = 256 if args.quick else 1024
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    unet = build_model("unet-digits", (1, 8, 8))
    x0, _ = load_digits_split("train")
    unet_loss = fixed_diffusion_loss_fn(x0[:batch], NoiseSchedule(), draws=1, seed=0)
    mlp = build_model("mlp2d", (2,))
    mlp_loss = fixed_diffusion_loss_fn(sample_toy2d("moons", n_toy, 0), NoiseSchedule(), seed=0)

    print("== inputs")
    print(f"machine      {machine()}, load avg at start {load()}")
    print(f"torch        {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"grid         {grid} x {grid} = {grid * grid} points, span [-1, 1], seed 0, random init")
    print(f"unet-digits  {ParamSpace(unet).n} params, fixed batch {batch} digits")
    print(f"mlp2d        {ParamSpace(mlp).n} params, fixed batch {n_toy} 'moons' points")
    print(f"vmap         {args.batch_points} grid points per call")

    rows = run("mlp2d", mlp, mlp_loss, grid, args.batch_points)
    rows += run("unet-digits", unet, unet_loss, grid, args.batch_points)
    print(f"\n== {grid}x{grid} landscape (load avg at end {load()})")
    print(f"{'model':12s} {'method':34s} {'time s':>8s} {'speed-up':>9s} {'max rel diff':>12s}")
    for name, label, dt, ratio, diff in rows:
        print(f"{name:12s} {label:34s} {dt:8.2f} {ratio:8.2f}x {diff:12.1e}")


if __name__ == "__main__":
    main()
