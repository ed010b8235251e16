"""Sweep SAM's radius rho on digits: flatness (lambda_max, perturbation sharpness, trace) and
sample quality (W2 at T'=20, adm sampler) of the trained model vs rho.

    .venv/bin/python benchmarks/rho_sweep.py --out /tmp/rho_sweep           # full (see RESULTS)
    .venv/bin/python benchmarks/rho_sweep.py --quick --out /tmp/rho_quick   # smoke check, ~2 min

Every run goes through the real training path (`flatgen.train.train` on a config built with
`flatgen.config.build_config`): digits, the unet-digits preset, batch 128, the same seed and
the same number of steps for every rho; rho = 0 is plain AdamW (method preset "adm").
Extra AdamW seeds (--noise-seeds) give the seed-to-seed spread of every measure, so that a
difference between two rhos can be read against it.

Measured on each trained model (raw weights, no EMA):
  lambda_max   top Hessian eigenvalue of the fixed-data diffusion loss
               (flatgen.flatness.sharpness_loss_fn: the same x0, t, noise for every model)
  worst@r      worst-case loss increase within an L2 ball of radius r in weight space
               (flatgen.analysis.worst_case_sharpness, 5 ascent steps)
  trace        Hutch++ Hessian trace (only with --trace-matvecs > 0; it costs a minute a model)
  W2 / FID     flatgen.evaluate.evaluate_quality at T'=20 with the adm sampler, n=297 (the test
               set), with the real-data floor (an equal-size draw of real training digits)

Writes OUT/results.csv, OUT/results.json (inputs, machine, rows, recommendation) and keeps the
run directories under OUT/runs (a finished run with the same config is reused, not retrained).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from _common import add_threads_option, finished_run, load, machine  # benchmarks/_common.py

from flatgen.analysis import hessian_eigenvalues, hessian_trace, worst_case_sharpness
from flatgen.config import build_config
from flatgen.evaluate import evaluate_quality
from flatgen.flatness import sharpness_loss_fn
from flatgen.train import load_run, train

FULL = dict(
    rhos="0,0.01,0.05,0.1,0.2,0.5,1.0",
    steps=400,
    noise_seeds=1,
    sharpness_batch=256,
    worst_rhos="0.1,0.5",
    n_eval=297,
)
QUICK = dict(
    rhos="0,0.1,1.0",
    steps=40,
    noise_seeds=0,
    sharpness_batch=64,
    worst_rhos="0.1",
    n_eval=64,
)


def overrides_for(rho: float, steps: int, seed: int, extra: list[str]) -> list[str]:
    """The config overrides of one sweep point: AdamW for rho = 0, SAM with radius rho else."""
    method = ["method.preset=adm"] if rho == 0 else ["method.preset=sam", f"method.sam.rho={rho}"]
    return method + [
        f"train.steps={steps}",
        f"train.warmup_steps={min(100, steps // 10)}",
        f"train.seed={seed}",
        f"train.ckpt_every={steps}",
        "train.cpu=true",
        *extra,
    ]


def train_or_reuse(cfg, run_dir: Path) -> tuple[float, bool]:
    """Train cfg into run_dir; reuse a finished run with the identical resolved config."""
    done = finished_run(run_dir, cfg)
    if done is not None:
        return float(done["seconds"]), True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result = train(cfg, run_dir, progress=False)
    return result.seconds, False


def measure(run_dir: Path, args: argparse.Namespace, worst_rhos: list[float]) -> dict:
    """lambda_max, perturbation sharpness, trace (optional) and W2 of a trained run."""
    run = load_run(run_dir)
    model = run.model("raw")
    loss_fn = sharpness_loss_fn(run, batch=args.sharpness_batch)
    out: dict = {}
    with torch.no_grad():  # a rescaling of the weights would change lambda_max by itself
        out["w_norm"] = float(torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())))
    t0 = time.perf_counter()
    with torch.no_grad():
        out["loss_fixed"] = float(loss_fn(model))
    eig = hessian_eigenvalues(model, loss_fn, k=1, tol=args.tol, max_iter=args.max_iter)
    out["lambda_max"] = float(eig.vals[0])
    out["hvps_lambda"] = int(getattr(eig, "n_matvecs", -1))
    curve = worst_case_sharpness(model, loss_fn, rhos=worst_rhos)
    for r, inc in zip(worst_rhos, curve.increase, strict=True):
        out[f"worst@{r:g}"] = float(inc)
    if args.trace_matvecs > 0:
        out["trace"] = float(hessian_trace(model, loss_fn, n_matvecs=args.trace_matvecs))
    out["sharpness_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = evaluate_quality(run, weights=("raw",), steps=(args.eval_steps,), samplers=("adm",),
                         n=args.n_eval,
                         progress=False)
    row = q["results"][0]
    out["w2"] = float(row["w2"])
    if "digits_fid" in row:
        out["fid"] = float(row["digits_fid"])
    out["w2_floor"] = float(q["floor"].get("w2_floor", math.nan))
    out["w2_excess"] = out["w2"] - out["w2_floor"]
    out["fid_floor"] = float(q["floor"].get("digits_fid_floor", math.nan))
    out["quality_s"] = time.perf_counter() - t0
    return out


def fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def tolerance(noise: dict, key: str) -> float:
    """max(10%, twice the AdamW seed-to-seed spread of `key`)."""
    return max(0.10, 2 * noise.get(f"{key}_rel_spread", 0.0))


def recommend(rows: list[dict], noise: dict) -> dict:
    """The rho with the lowest lambda_max among those whose quality stays within the noise band
    of AdamW's, provided its reduction is clear (beyond twice the seed spread, at least 10%).

    Quality is the digits-FID where it was measured (pixel W2 cannot rank digits models), else
    W2's excess over the real-data floor (raw W2 sits close to the floor, so its ratio hides real
    losses), or W2 itself within 1% when even AdamW's samples sit below the floor.
    """
    base = next(r for r in rows if r["rho"] == 0 and r["seed"] == rows[0]["seed"])
    lam_tol = tolerance(noise, "lambda_max")
    w2_tol = tolerance(noise, "w2_excess")
    fid_tol = tolerance(noise, "fid")
    clear, ok_quality = [], []
    for r in rows:
        if r["rho"] == 0 or r["seed"] != base["seed"]:
            continue
        if r["lambda_max"] <= (1 - lam_tol) * base["lambda_max"]:
            clear.append(r["rho"])
        if "fid" in r and "fid" in base:  # on digits pixel W2 cannot rank models (RESULTS.md)
            kept = r["fid"] <= (1 + fid_tol) * base["fid"]
        elif base["w2_excess"] > 0:
            kept = r["w2_excess"] <= (1 + w2_tol) * base["w2_excess"]
        else:  # AdamW's samples sit below the floor: a ratio of excesses means nothing there
            kept = r["w2"] <= (1 + 0.01) * base["w2"]
        if kept:
            ok_quality.append(r["rho"])
    both = [r for r in rows if r["rho"] in clear and r["rho"] in ok_quality
            and r["seed"] == base["seed"]]
    pick = min(both, key=lambda r: r["lambda_max"]) if both else None
    if "fid" in base:
        quality_rule = f"FID <= (1 + {fid_tol:.2f}) x AdamW's"
    elif base["w2_excess"] > 0:
        quality_rule = f"W2 - floor <= (1 + {w2_tol:.2f}) x AdamW's"
    else:
        quality_rule = "W2 <= 1.01 x AdamW's (AdamW is below the real-data floor)"
    return {
        "rule": (f"lowest lambda_max among rho with lambda_max <= (1 - {lam_tol:.2f}) x AdamW's "
                 f"and {quality_rule} (tolerances: max(10%, 2 x AdamW seed spread))"),
        "clear_reduction": clear,
        "quality_kept": ok_quality,
        "smallest_clear_rho": min(clear) if clear else None,
        "recommended_rho": pick["rho"] if pick else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (csv, json, runs/)")
    ap.add_argument("--quick", action="store_true", help="3 rhos, 40 steps, small batches")
    ap.add_argument("--rhos", help=f"comma-separated radii, 0 = AdamW (default {FULL['rhos']})")
    ap.add_argument("--steps", type=int, help=f"training steps per run (default {FULL['steps']})")
    ap.add_argument("--seed", type=int, default=0, help="training seed of the sweep")
    ap.add_argument("--noise-seeds", type=int,
                    help="extra AdamW seeds for the seed-to-seed spread (default 1; quick 0)")
    ap.add_argument("--sharpness-batch", type=int,
                    help="fixed (x0, t, noise) triples for the Hessian (default 256; quick 64)")
    ap.add_argument("--tol", type=float, default=1e-2, help="lambda_max relative tolerance")
    ap.add_argument("--max-iter", type=int, default=60, help="Lanczos HVP budget")
    ap.add_argument("--worst-rhos", help="radii of the worst-case sharpness (default 0.1,0.5)")
    ap.add_argument("--trace-matvecs", type=int, default=0,
                    help="Hutch++ trace products per model (0: skip; ~2 s per product here)")
    ap.add_argument("--n-eval", type=int, help="samples for W2/FID (default 297 = the test set)")
    ap.add_argument("--eval-steps", type=int, default=20, help="sampling steps T'")
    add_threads_option(ap)
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="extra config override for every run, e.g. train.batch_size=64")
    args = ap.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    rhos = [float(x) for x in str(args.rhos).split(",")]
    if 0.0 not in rhos:
        rhos = [0.0, *rhos]
    worst_rhos = [float(x) for x in str(args.worst_rhos).split(",")]
    worst_key = f"worst@{worst_rhos[-1]:g}"
    torch.set_num_threads(args.threads)
    out: Path = args.out
    (out / "runs").mkdir(parents=True, exist_ok=True)

    points = [(rho, args.seed) for rho in rhos]
    points += [(0.0, args.seed + 1 + i) for i in range(args.noise_seeds)]
    probe = build_config({}, overrides_for(rhos[1] if len(rhos) > 1 else 0.0, args.steps,
                                           args.seed, args.extra))
    print("== inputs")
    print(f"command        {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine        {machine()}; load avg (1/5/15 min) at start {load()}")
    print(f"torch          {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"training       data {probe.data.name}, model {probe.model.preset}, batch "
          f"{probe.train.batch_size}, {args.steps} steps, lr {probe.train.lr} "
          f"({probe.train.lr_decay}, warm-up {probe.train.warmup_steps}), seed {args.seed}, "
          f"grad clip {probe.train.grad_clip}")
    print(f"sweep          rho = {', '.join(f'{r:g}' for r in rhos)} (0 = AdamW); "
          f"{args.noise_seeds} extra AdamW seed(s) for the spread")
    print(f"flatness       lambda_max (Lanczos, tol {args.tol}, <= {args.max_iter} HVPs) and "
          f"worst-case sharpness at r = {', '.join(f'{r:g}' for r in worst_rhos)} on "
          f"{args.sharpness_batch} fixed (x0, t, noise); trace "
          f"{'Hutch++ ' + str(args.trace_matvecs) + ' HVPs' if args.trace_matvecs else 'off'}")
    print(f"quality        W2 and digits-FID, T'={args.eval_steps}, adm sampler, n={args.n_eval}, "
          f"raw weights, with the real-data floor")
    print(f"extra --set    {' '.join(args.extra) or '-'}")
    print(f"output         {out}", flush=True)
    if args.quick:
        print("quick          a smoke check of the script: the numbers are not a measurement")

    rows: list[dict] = []
    t_start = time.perf_counter()
    for i, (rho, seed) in enumerate(points):
        cfg = build_config({}, overrides_for(rho, args.steps, seed, args.extra))
        name = f"rho{rho:g}_seed{seed}"
        seconds, reused = train_or_reuse(cfg, out / "runs" / name)
        row = {"rho": rho, "seed": seed, "method": cfg.method.name, "train_s": seconds,
               "reused": reused, "load": load()}
        row |= measure(out / "runs" / name, args, worst_rhos)
        rows.append(row)
        print(f"[{i + 1}/{len(points)}] rho={rho:g} seed={seed}: train {seconds:.0f} s"
              f"{' (reused)' if reused else ''}, lambda_max {row['lambda_max']:.4g} "
              f"({row['hvps_lambda']} HVPs), W2 {row['w2']:.4g}, measures "
              f"{row['sharpness_s'] + row['quality_s']:.0f} s, load {row['load']}", flush=True)

    base = next(r for r in rows if r["rho"] == 0 and r["seed"] == args.seed)
    for r in rows:
        r["lambda_rel"] = r["lambda_max"] / base["lambda_max"]
        r["worst_rel"] = r[worst_key] / base[worst_key] if base[worst_key] > 0 else math.nan
        r["w2_rel"] = r["w2"] / base["w2"]
        r["w2_excess_rel"] = r["w2_excess"] / base["w2_excess"]
        if "fid" in r and "fid" in base:
            r["fid_rel"] = r["fid"] / base["fid"]
    adam = [r for r in rows if r["rho"] == 0]
    noise: dict = {"adamw_seeds": [r["seed"] for r in adam]}
    if len(adam) > 1:
        for key in ("lambda_max", worst_key, "w2", "w2_excess", "fid"):
            if not all(key in r for r in adam):
                continue
            vals = [r[key] for r in adam]
            mean = sum(vals) / len(vals)
            noise[f"{key}_rel_spread"] = (max(vals) - min(vals)) / mean
    rec = recommend(rows, noise)

    has_trace = args.trace_matvecs > 0
    has_fid = all("fid" in r for r in rows)
    head = (f"{'rho':>6s} {'seed':>4s} {'lambda_max':>10s} {'rel':>6s} {worst_key:>10s} "
            f"{'rel':>6s} " + (f"{'trace':>9s} " if has_trace else "")
            + f"{'W2':>7s} {'W2-floor':>8s} {'rel':>6s} "
            + (f"{'FID':>7s} {'rel':>6s} " if has_fid else "")
            + f"{'loss':>7s} {'|w|':>6s} {'train s':>7s}")
    print(f"\n== results ({len(points)} runs, {time.perf_counter() - t_start:.0f} s in all; "
          f"load at end {load()})")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['rho']:6g} {r['seed']:4d} {r['lambda_max']:10.4g} {r['lambda_rel']:6.3f} "
                f"{r[worst_key]:10.4g} {r['worst_rel']:6.3f} "
                + (f"{r['trace']:9.4g} " if has_trace else "")
                + f"{r['w2']:7.4f} {r['w2_excess']:8.4f} {r['w2_excess_rel']:6.3f} "
                + (f"{r['fid']:7.3f} {r['fid_rel']:6.3f} " if has_fid else "")
                + f"{r['loss_fixed']:7.4f} {r['w_norm']:6.2f} {r['train_s']:7.0f}")
        print(line)
    print(f"real-data floor at n={args.n_eval}: W2 {fmt(base['w2_floor'])}, "
          f"FID {fmt(base['fid_floor'])}")
    if len(adam) > 1:
        spread = ", ".join(f"{k.removesuffix('_rel_spread')} {v:.1%}"
                           for k, v in noise.items() if k.endswith("_rel_spread"))
        print(f"AdamW seed-to-seed spread (max - min) / mean over seeds "
              f"{noise['adamw_seeds']}: {spread}")
    print(f"\nrule: {rec['rule']}")
    print(f"clear flatness reduction at rho = {rec['clear_reduction'] or 'none'}; "
          f"quality kept at rho = {rec['quality_kept'] or 'none'}")
    print(f"smallest rho with a clear reduction: {rec['smallest_clear_rho']}; "
          f"recommended rho: {rec['recommended_rho']}")
    usual = next((r for r in rows if r["rho"] == 0.05 and r["seed"] == args.seed), None)
    if usual is not None:
        print(f"at the usual SAM radius rho = 0.05: lambda_max {usual['lambda_rel']:.2f}x, "
              f"{worst_key} {usual['worst_rel']:.2f}x, W2 - floor {usual['w2_excess_rel']:.2f}x"
              + (f", FID {usual['fid_rel']:.2f}x" if "fid_rel" in usual else "") + " AdamW's")

    inputs = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"inputs": inputs, "machine": machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "config_example": probe.model_dump(mode="json"),
               "rows": rows, "noise": noise, "recommendation": rec}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'results.csv'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
