"""flatgen's Hessian tools vs PyHessian on the digits U-Net, side by side on one fixed batch.

    .venv/bin/python benchmarks/hessian_speed.py            # ~10 min on 2 busy CPU cores
    .venv/bin/python benchmarks/hessian_speed.py --quick    # ~2-3 min

Measures (same model, same fixed batch, same tolerance, same thread count):
  1. the HVP formulations (time per product): double backward through a kept gradient graph
     (flatgen's default, and PyHessian's), double backward rebuilding the graph each time,
     forward-over-reverse (torch.func);
  2. a tight scipy eigsh reference (ARPACK) on flatgen's HVP operator;
  3. top-1 and top-k eigenvalues: PyHessian (deflated power iteration) vs flatgen (Lanczos
     with full reorthogonalization): wall time, HVP count, relative error vs the reference;
  4. trace: Hutch++ with m products vs Hutchinson with 2m, standard errors side by side, and
     the Hutchinson budget that would match Hutch++'s error.

Needs `pip install -r benchmarks/requirements.txt` (PyHessian; GPL, used only here, never
copied into flatgen). PyHessian is patched at run time only by wrapping calls: attention is
forced onto the twice-differentiable math kernel and its HVP function is wrapped to count
products. Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import add_threads_option, load, machine  # benchmarks/_common.py
from scipy.sparse.linalg import LinearOperator as SciPyOperator
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from flatgen.analysis import HessianOperator, hessian_eigenvalues, hutchinson, hutchpp
from flatgen.analysis.params import analysis_mode
from flatgen.data import load_digits_split
from flatgen.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    draw_training_noise,
    fixed_diffusion_loss_fn,
)
from flatgen.models import build_model


def train_briefly(model: nn.Module, x: torch.Tensor, steps: int, seed: int) -> None:
    """A few seeded AdamW steps, so that the Hessian is that of a partly trained net."""
    schedule = NoiseSchedule()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        t, noise, _ = draw_training_noise(x[idx], schedule, g)
        loss = diffusion_loss(model, x[idx], schedule, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


class StackedDenoiser(nn.Module):
    """net(x_t, t) as a module of one input tensor [x_t flattened, t], for PyHessian."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.net = net
        self.shape = shape

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs[:, :-1].reshape(-1, *self.shape)
        t = inputs[:, -1].round().long()
        return self.net(x, t)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small batch, fewer steps and products")
    ap.add_argument("--batch", type=int, default=None, help="fixed batch size (default 128/32)")
    ap.add_argument("--k", type=int, default=5, help="top-k eigenvalues")
    ap.add_argument("--tol", type=float, default=1e-3, help="eigenvalue tolerance (both tools)")
    ap.add_argument("--train-steps", type=int, default=None, help="AdamW steps (200/50)")
    ap.add_argument("--trace-matvecs", type=int, default=None, help="Hutch++ budget m (60/30)")
    add_threads_option(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-equal-accuracy",
        action="store_true",
        help="skip the extra PyHessian top-k run at tol / 10 (its accuracy at tol is lower)",
    )
    args = ap.parse_args()
    batch = args.batch or (32 if args.quick else 128)
    steps = args.train_steps if args.train_steps is not None else (50 if args.quick else 200)
    m_trace = args.trace_matvecs or (30 if args.quick else 60)
    torch.set_num_threads(args.threads)

    import pyhessian

    # pyhessian/__init__ rebinds the name `hessian` to the class: fetch the module itself
    ph = sys.modules["pyhessian.hessian"]

    counter = {"n": 0}
    original_hvp = ph.hessian_vector_product

    def counting_hvp(*a, **kw):
        counter["n"] += 1
        return original_hvp(*a, **kw)

    ph.hessian_vector_product = counting_hvp

    torch.manual_seed(args.seed)
    x_train, _ = load_digits_split("train")
    model = build_model("unet-digits", (1, 8, 8))
    _, t_train = timed(lambda: train_briefly(model, x_train, steps, args.seed))
    n_params = sum(p.numel() for p in model.parameters())

    # the fixed batch: the same (x0, t, noise) fixed_diffusion_loss_fn draws
    schedule = NoiseSchedule()
    x0 = x_train[:batch]
    t, noise, _ = draw_training_noise(x0, schedule, torch.Generator().manual_seed(args.seed))
    loss_fn = fixed_diffusion_loss_fn(x0, schedule, draws=1, seed=args.seed)
    stacked = StackedDenoiser(model, (1, 8, 8))
    inputs = torch.cat([schedule.add_noise(x0, noise, t).flatten(1), t[:, None].float()], 1)
    with analysis_mode(model), torch.no_grad():
        l_ours, l_ph = float(loss_fn(model)), float(F.mse_loss(stacked(inputs), noise))
    assert abs(l_ours - l_ph) <= 1e-6 * abs(l_ours), (l_ours, l_ph)

    print("== inputs")
    print(f"machine        {machine()}, load avg (1/5/15 min) {load()}")
    print(f"torch          {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"pyhessian      {getattr(pyhessian, '__version__', '0.1')}")
    print(f"model          unet-digits, {n_params} params, {steps} AdamW steps ({t_train:.0f} s)")
    print(
        f"fixed batch    {batch} digits, one (t, noise) draw, seed {args.seed}, loss {l_ours:.4g}"
    )
    print(f"tolerance      {args.tol} (both tools), top-k {args.k}")

    # 1. HVP formulations
    op = HessianOperator(model, loss_fn)
    op_fwd = HessianOperator(model, loss_fn, method="forward")
    params = op.space.params
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(1))

    def rebuild():
        with analysis_mode(model):
            g = torch.autograd.grad(loss_fn(model), params, create_graph=True)
            return torch.autograd.grad(g, params, grad_outputs=op.space.split(v))

    hv_ref = op.matvec(v)
    hv_fwd = op_fwd.matvec(v)
    rel = float((hv_fwd - hv_ref).norm() / hv_ref.norm())
    reps = 3 if args.quick else 5
    times: dict[str, list[float]] = {"kept graph": [], "rebuilt graph": [], "fwd-over-rev": []}
    for _ in range(reps):  # interleaved, so that load changes hit all three alike
        times["kept graph"].append(timed(lambda: op.matvec(v))[1])
        times["rebuilt graph"].append(timed(rebuild)[1])
        times["fwd-over-rev"].append(timed(lambda: op_fwd.matvec(v))[1])
    best = {k: min(ts) for k, ts in times.items()}
    print("\n== 1. Hessian-vector product formulations (min of", reps, "interleaved runs)")
    print(f"{'formulation':32s} {'s/HVP':>8s} {'vs kept':>8s}")
    for name, label in [
        ("kept graph", "double backward, kept graph"),
        ("rebuilt graph", "double backward, rebuilt graph"),
        ("fwd-over-rev", "forward-over-reverse (func)"),
    ]:
        print(f"{label:32s} {best[name]:8.3f} {best[name] / best['kept graph']:7.2f}x")
    print(f"fwd-over-rev agrees with double backward to {rel:.1e} (relative)")

    # 2. reference: tight ARPACK on the same operator
    n_ref = {"n": 0}

    def mv(x: np.ndarray) -> np.ndarray:
        n_ref["n"] += 1
        return op.matvec(torch.from_numpy(x.ravel()).float()).double().numpy()

    lin = SciPyOperator((op.n, op.n), matvec=mv, dtype=np.float64)
    ncv = max(2 * args.k + 1, 20)
    (ref_vals, _), t_ref = timed(
        lambda: eigsh(lin, k=args.k, which="LA", tol=1e-6, ncv=ncv, v0=np.ones(op.n))
    )
    ref = np.sort(ref_vals)[::-1]
    print(f"\n== 2. reference: scipy eigsh(which='LA', tol=1e-6): {n_ref['n']} HVPs, {t_ref:.1f} s")
    print("top-k", " ".join(f"{x:.6g}" for x in ref))
    op.close()
    op_fwd.close()

    # 3. top-1 and top-k
    def pyhessian_top(n: int, tol: float):
        torch.manual_seed(args.seed)
        counter["n"] = 0
        with sdpa_kernel([SDPBackend.MATH]):
            h = ph.hessian(stacked, F.mse_loss, data=(inputs, noise), cuda=False)
            vals, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=n)
        model.zero_grad(set_to_none=True)
        return np.asarray(vals), counter["n"]

    def ours_top(n: int, tol: float):
        res = hessian_eigenvalues(model, loss_fn, k=n, tol=tol, seed=args.seed)
        return res.vals.numpy(), res.n_matvecs

    print("\n== 3. top eigenvalues: PyHessian (power iteration + deflation) vs flatgen (Lanczos)")
    print(f"{'task':6s} {'tool, tol':18s} {'time s':>8s} {'HVPs':>5s} {'max rel err':>11s}  values")
    ratios = {}
    runs = [(1, args.tol), (args.k, args.tol)]
    if not args.no_equal_accuracy:
        runs.append((args.k, args.tol / 10))
    for n, tol in runs:
        row = {}
        tools = [("pyhessian", pyhessian_top), ("flatgen", ours_top)]
        if tol != args.tol:
            tools = tools[:1]  # PyHessian tightened: compare with flatgen at args.tol
        for tool, fn in tools:
            (vals, n_hvp), tt = timed(lambda fn=fn, n=n, tol=tol: fn(n, tol))
            # PyHessian finds them in magnitude order; compare sorted
            err = np.max(np.abs(np.sort(vals)[::-1] - ref[:n]) / np.abs(ref[:n]))
            shown = " ".join(f"{x:.5g}" for x in vals)
            print(f"top-{n:<2d} {f'{tool}, {tol:g}':18s} {tt:8.2f} {n_hvp:5d} {err:11.1e}  {shown}")
            row[tool] = (tt, n_hvp, err)
        ratios[(n, tol)] = row

    # 4. trace
    print(f"\n== 4. trace: Hutch++ with m = {m_trace} HVPs vs Hutchinson with 2m = {2 * m_trace}")
    with HessianOperator(model, loss_fn) as op:
        hpp, t_pp = timed(lambda: hutchpp(op, n_matvecs=m_trace, seed=args.seed))
        hut, t_h = timed(lambda: hutchinson(op, n_matvecs=2 * m_trace, seed=args.seed))
    n_rest = m_trace - 2 * (m_trace // 3)
    # per-probe variances -> the Hutchinson budget with Hutch++'s standard error
    s2_h = hut.stderr**2 * hut.n_matvecs
    equal_err_budget = s2_h / hpp.stderr**2
    print(f"{'estimator':12s} {'HVPs':>5s} {'time s':>7s} {'estimate':>10s} {'stderr':>9s}")
    for name, r, tt in (("hutch++", hpp, t_pp), ("hutchinson", hut, t_h)):
        print(f"{name:12s} {r.n_matvecs:5d} {tt:7.1f} {r.estimate:10.4g} {r.stderr:9.3g}")
    gap = abs(hpp.estimate - hut.estimate) / np.hypot(hpp.stderr, hut.stderr)
    print(f"estimates differ by {gap:.1f} combined stderr; Hutch++ residual probes: {n_rest}")
    print(
        f"Hutchinson needs ~{equal_err_budget:.0f} HVPs to reach Hutch++'s stderr at {m_trace}: "
        f"{equal_err_budget / m_trace:.1f}x more"
    )

    print("\n== summary (ratios measured side by side; wall-time ratios move with machine load)")
    print(f"{'measure':44s} {'result':>10s} {'target':>10s}")
    kept, fwd = best["kept graph"], best["fwd-over-rev"]
    print(f"{'HVP: fwd-over-rev time / double backward':44s} {fwd / kept:9.2f}x {'(pick)':>10s}")
    ours = {n: ratios[(n, args.tol)]["flatgen"] for n in (1, args.k)}
    for (n, tol), row in ratios.items():
        (ph_t, ph_n, ph_err), (t, n_hvp, err) = row["pyhessian"], ours[n]
        tag = f"top-{n}, PyHessian tol {tol:g}"
        target = ">= 1x" if n == 1 else (">= 5x" if tol == args.tol else "")
        print(f"{tag + ' time / flatgen':44s} {ph_t / t:9.2f}x {target:>10s}")
        print(f"{tag + ' HVPs / flatgen':44s} {ph_n / n_hvp:9.2f}x")
        print(f"{tag + ' max rel err':44s} {ph_err:10.1e}")
    for n, (_, _, err) in ours.items():
        print(
            f"{f'top-{n}, flatgen tol {args.tol:g} max rel err':44s} {err:10.1e} {'<= 1e-2':>10s}"
        )
    trace_ratio = equal_err_budget / m_trace
    print(f"{'trace HVPs at equal stderr, Hutchinson/H++':44s} {trace_ratio:9.1f}x {'>= 2x':>10s}")
    print(f"machine load at end: {load()}")


if __name__ == "__main__":
    main()
