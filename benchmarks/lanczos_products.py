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

Then it times the one cheaper-looking product on a CPU, a central finite difference
(g(w + e v) - g(w - e v)) / 2e of two gradients, against the double backward, interleaved, and
prints its relative error.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flatgen.analysis.hvp import HessianOperator
from flatgen.analysis.lanczos import Lanczos, ritz_error_bounds, select_ritz
from flatgen.analysis.params import analysis_mode, functional_loss
from flatgen.flatness import sharpness_loss_fn
from flatgen.train import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a trained run directory")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40,
                    help="products; the last Ritz values are the reference")
    ap.add_argument("--batch", type=int, default=128, help="fixed (x0, t, noise) triples")
    ap.add_argument("--weights", default="raw")
    ap.add_argument("--fd-eps", type=float, default=1e-2,
                    help="finite-difference step along a unit vector")
    ap.add_argument("--repeats", type=int, default=3, help="timed products of each kind")
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
            history.append((lz.m, theta[idx].copy(),
                            ritz_error_bounds(theta, resid, idx) / np.abs(theta[idx])))
    ref = history[-1][1]
    print(f"top-{args.k} reference after {args.steps} products: "
          f"{np.array2string(ref, precision=4)}")
    print("products | max rel. error | max rel. change | flatgen bound")
    prev = None
    for m, vals, bound in history:
        err = np.max(np.abs(vals - ref) / np.abs(ref))
        change = "-" if prev is None else f"{np.max(np.abs(vals - prev) / np.abs(vals)):.1e}"
        print(f"{m:8d} | {err:14.1e} | {change:>15} | {np.max(bound):.1e}")
        prev = vals
        if err < 1e-6:
            break
    finite_difference_cost(op, lz.Q[0], args.fd_eps, args.repeats)


def finite_difference_cost(op: HessianOperator, v: torch.Tensor, eps: float, repeats: int) -> None:
    """Time per product and error of a central-difference product
    vs the kept-graph double backward."""
    space, model, loss_fn = op.space, op.model, op.loss_fn
    w = space.flat().detach()

    def grad_at(x: torch.Tensor) -> torch.Tensor:
        params = {k: t.requires_grad_(True) for k, t in space.to_dict(x).items()}
        with analysis_mode(model):
            grads = torch.autograd.grad(functional_loss(model, loss_fn, params),
                                        list(params.values()))
        return torch.cat([g.reshape(-1) for g in grads])

    def central() -> torch.Tensor:
        return (grad_at(w + eps * v) - grad_at(w - eps * v)) / (2 * eps)

    times: dict[str, list[float]] = {"double backward": [], "central difference": []}
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        for name, fn in (("double backward", lambda: op.matvec(v)),
                         ("central difference", central)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    exact = op.matvec(v)
    err = float((central() - exact).norm() / exact.norm())
    best = {k: min(t) for k, t in times.items()}
    print(f"\nper product (min of {repeats}, {torch.get_num_threads()} threads): double backward "
          f"{best['double backward']:.3f} s, central difference (eps {eps:g}) "
          f"{best['central difference']:.3f} s = "
          f"{best['central difference'] / best['double backward']:.2f}x, "
          f"relative error {err:.1e}")


if __name__ == "__main__":
    main()
