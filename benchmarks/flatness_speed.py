"""The flatness stage of one method, before and after removing its repeated work (issue 22).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flatness_speed.py   # ~5 min on 1 busy core

One digits U-Net (the unet-digits preset, a few AdamW steps from init so that the Hessian is a
trained net's), the demo's flatness settings (sharpness_batch 256, top_k 1, trace_matvecs 15,
rhos [0.02, 0.05, 0.1], sigmas [0.02, 0.05], draws 2) and its expansion check (the demo's
quantization and weight-noise ladders plus the worst cases), timed both ways in this process,
alternating, in units of U = one forward of the same U-Net at batch 128 (timed here too). Times
are this process's CPU time (time.process_time; one torch thread, so it is the work done, and it
does not grow when other processes share the cores); the wall time is printed beside it.


  before: what src/flatgen/study/measure.py ran at commit 811c148, rebuilt from the public
          functions: one gradient graph for Lanczos, another for the trace, another for the
          expansion check; the three worst-case ascents run twice; the average case times a
          vmap trial on the first batch of points (losses_at's "auto");
  after:  one HessianOperator for Lanczos, the trace and every delta.H.delta, the expansion
          check on the summary's ascents, the average case point by point on the CPU.

Prints the time of each path (best of --repeats), the ratio, and that both give the same
numbers (lambda_max and trace to rounding; the expansion rows' measured rises bitwise).

Measured 2026-12-02 (AMD EPYC, 2 cores shared, load average 5-10, OMP_NUM_THREADS=1, 1 torch
thread, best of 2): before 1045 U, after 828 U, ratio 0.792 (U = 66.7 CPU-ms); the expansion
check went from 505 U to 283 U, and lambda_max, the trace and every expansion row came out the
same in both paths.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
import torch
from _common import add_threads_option, load, machine  # benchmarks/_common.py

from flatgen.analysis import (
    HessianOperator,
    ParamSpace,
    analysis_mode,
    filter_worst_case_sharpness,
    hessian_eigenvalues,
    hessian_trace,
    losses_at,
    random_direction,
    sharpness_summary,
)
from flatgen.data import load_digits_split
from flatgen.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    draw_training_noise,
    fixed_diffusion_loss_fn,
)
from flatgen.metrics import train_floor_sample
from flatgen.models import build_model
from flatgen.robustness.settings import RobustnessSettings
from flatgen.study.demo import demo_robustness
from flatgen.study.expansion import expansion_check

RHOS, SIGMAS, DRAWS, TRACE_MATVECS, BATCH = [0.02, 0.05, 0.1], [0.02, 0.05], 2, 15, 256


def trained_unet(x: torch.Tensor, steps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("unet-digits", (1, 8, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g, schedule = torch.Generator().manual_seed(0), NoiseSchedule()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        t, noise, _ = draw_training_noise(x[idx], schedule, g)
        loss = diffusion_loss(model, x[idx], schedule, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def forward_unit(model: torch.nn.Module, x: torch.Tensor, reps: int = 30) -> float:
    """U: the median CPU time of one forward at batch 128."""
    xb, t = x[:128], torch.randint(0, 1000, (128,), generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        for _ in range(reps + 3):
            t0 = time.process_time()
            model(xb, t)
            times.append(time.process_time() - t0)
    return float(np.median(times[3:]))


def old_average_case(model, loss_fn) -> list[float]:
    """average_case_sharpness as at 811c148: losses_at with vectorize="auto" (a vmap trial)."""
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(0)
    dirs = torch.stack([random_direction(model, g, bias="zero", space=space)
                        for _ in range(DRAWS)])
    sig = torch.as_tensor(SIGMAS, dtype=torch.float64)
    coords = (sig[:, None, None] * torch.eye(DRAWS, dtype=torch.float64)[None]).reshape(-1, DRAWS)
    with analysis_mode(model):
        vals = losses_at(model, loss_fn, dirs, coords=coords, space=space, vectorize="auto")
    return vals.reshape(len(SIGMAS), DRAWS).mean(axis=1).tolist()


def before(model, make_loss, settings) -> tuple[dict, dict]:
    loss_fn, parts = make_loss(), {}
    t0 = time.process_time()
    lam = hessian_eigenvalues(model, loss_fn, k=1, seed=0).tolist()[0]
    parts["lanczos"] = time.process_time() - t0
    tr = hessian_trace(model, loss_fn, n_matvecs=TRACE_MATVECS, seed=0).estimate
    parts["trace"] = time.process_time() - t0 - sum(parts.values())
    filter_worst_case_sharpness(model, loss_fn, RHOS, seed=0)
    parts["worst case"] = time.process_time() - t0 - sum(parts.values())
    old_average_case(model, loss_fn)
    parts["average case"] = time.process_time() - t0 - sum(parts.values())
    rows = expansion_check(model, make_loss(), settings=settings, rhos=RHOS)
    parts["expansion"] = time.process_time() - t0 - sum(parts.values())
    return {"lambda_max": lam, "trace": tr, "rows": rows}, parts


def after(model, make_loss, settings) -> tuple[dict, dict]:
    loss_fn = make_loss()
    t0 = time.process_time()
    with HessianOperator(model, loss_fn) as op:
        flat = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=TRACE_MATVECS,
                                 rhos=RHOS, sigmas=SIGMAS, draws=DRAWS, seed=0, operator=op)
        t1 = time.process_time()
        rows = expansion_check(model, loss_fn, settings=settings, rhos=RHOS, operator=op,
                               ascents=flat.ascents, lambda_max=flat["lambda_max"])
    parts = {"summary": t1 - t0, "expansion": time.process_time() - t1}
    return {"lambda_max": flat["lambda_max"], "trace": flat["trace"]["estimate"],
            "rows": rows}, parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_threads_option(ap)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each path")
    ap.add_argument("--train-steps", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_train, _ = load_digits_split("train")
    model = trained_unet(x_train, args.train_steps)
    x0 = train_floor_sample(x_train, BATCH, seed=0)

    def make_loss():  # sharpness_loss_fn's loss (flatgen.flatness), without a Run
        return fixed_diffusion_loss_fn(x0, NoiseSchedule(), draws=1, seed=0)

    settings = RobustnessSettings(**{k: v for k, v in demo_robustness().items()
                                     if k in ("bits", "granularity", "noise_sigmas")})
    print(f"machine: {machine()}; torch threads {args.threads}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    best: dict[str, float] = {}
    results, breakdown, units = {}, {}, []
    for rep in range(args.repeats):
        for name, path in (("before", before), ("after", after)):
            units.append(forward_unit(model, x_train))
            t0, w0 = time.process_time(), time.perf_counter()
            results[name], parts = path(model, make_loss, settings)
            elapsed, wall = time.process_time() - t0, time.perf_counter() - w0
            if elapsed < best.get(name, float("inf")):
                best[name], breakdown[name] = elapsed, parts
            print(f"  run {rep + 1} {name:6s}: {elapsed:7.1f} CPU-s, {wall:7.1f} s wall "
                  f"(load {load()})", flush=True)
    unit = float(np.median(units))
    print(f"U = one forward of the digits U-Net at batch 128: {1e3 * unit:.2f} CPU-ms "
          f"(median of {len(units)} medians, spread {1e3 * min(units):.2f}-"
          f"{1e3 * max(units):.2f})")
    for name in ("before", "after"):
        parts = ", ".join(f"{k} {v / unit:.0f} U" for k, v in breakdown[name].items())
        print(f"{name:6s}: {best[name] / unit:7.0f} U  ({best[name]:.1f} CPU-s; {parts})")
    b, a = results["before"], results["after"]
    same = all(x["measured"] == y["measured"] for x, y in zip(a["rows"], b["rows"], strict=True))
    pred = max(abs(x["predicted"] - y["predicted"]) / max(abs(y["predicted"]), 1e-30)
               for x, y in zip(a["rows"], b["rows"], strict=True))
    print(f"same numbers: lambda_max {a['lambda_max']:.6g} vs {b['lambda_max']:.6g}, trace "
          f"{a['trace']:.6g} vs {b['trace']:.6g}; expansion rows measured bitwise equal: {same}; "
          f"predicted max rel diff {pred:.1e}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"flatness stage, after / before: {best['after'] / best['before']:.3f} "
          f"(before {best['before'] / unit:.0f} U, after {best['after'] / unit:.0f} U)")


if __name__ == "__main__":
    main()
