"""How many Hessian-vector products does Lanczos need before its top-k values are within 1%?

    .venv/bin/python benchmarks/lanczos_products.py demo/runs/adm-s0 --k 5

Runs Lanczos (full reorthogonalization, flatgen.analysis.lanczos) for --steps products on the
fixed-data diffusion loss of a trained run (the study's sharpness batch) and prints, after each
product, the largest relative error of the top-k Ritz values against the final ones (the
reference: by --steps products they have converged to machine precision), the largest relative
change since the previous product (the stopping rule of PyHessian's power iteration), and
flatgen's error bound (the stopping rule of `hessian_eigenvalues`). The time of a top-k solve is
(products) x (time per product) for any Krylov solver that takes one product at a time, so the
first row under 1% bounds what any such solver can gain over PyHessian on this machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from flatgen.analysis.hvp import HessianOperator
from flatgen.analysis.lanczos import Lanczos, ritz_error_bounds, select_ritz
from flatgen.report.measure import sharpness_loss_fn
from flatgen.train import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a trained run directory")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="products; the last Ritz values are the reference")
    ap.add_argument("--batch", type=int, default=128, help="fixed (x0, t, noise) triples")
    ap.add_argument("--weights", default="raw")
    args = ap.parse_args()

    run = load_run(args.run_dir)
    op = HessianOperator(run.model(args.weights), sharpness_loss_fn(run, args.batch))
    lz = Lanczos(op, max_iter=args.steps, generator=torch.Generator().manual_seed(0))
    history = []
    while lz.m < args.steps:
        lz.step()
        if lz.m >= args.k:
            theta, _, resid = lz.ritz()
            idx = select_ritz(theta, args.k, "LA")
            history.append((lz.m, theta[idx].copy(), ritz_error_bounds(theta, resid, idx) / np.abs(theta[idx])))
    ref = history[-1][1]
    print(f"top-{args.k} reference after {args.steps} products: {np.array2string(ref, precision=4)}")
    print("products | max rel. error | max rel. change | flatgen bound")
    prev = None
    for m, vals, bound in history:
        err = np.max(np.abs(vals - ref) / np.abs(ref))
        change = "-" if prev is None else f"{np.max(np.abs(vals - prev) / np.abs(vals)):.1e}"
        print(f"{m:8d} | {err:14.1e} | {change:>15} | {np.max(bound):.1e}")
        prev = vals
        if err < 1e-6:
            break


if __name__ == "__main__":
    main()
