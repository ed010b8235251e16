"""What SAM and its cheap variants cost per training step, and what flatness they buy.

    .venv/bin/python benchmarks/sam_cost.py                       # step-time ratios only
    .venv/bin/python benchmarks/sam_cost.py --sharpness           # + brief trainings, lambda_max
    .venv/bin/python benchmarks/sam_cost.py --quick --sharpness   # smoke check, ~3 min

1. Step time. Every method (AdamW, SAM, ASAM, LookSAM k=5, MomentumSAM, SAM every k=2 and
   k=5) gets its own copy of the same freshly initialized digits U-Net (unet-digits, batch 128)
   and the optimizer its config asks for (flatgen.train.method.Method), and steps through
   flatgen.train.step.train_step (the training loop's step: grad clipping included) on the
   same pre-drawn batches. After warm-up steps (excluded), the methods are interleaved over
   several rounds, the order rotated each round, each timing a block of 10 steps (a whole
   period of k = 2 and k = 5, so the cheap variants' SAM steps are counted in the right share).
   The ratio is the median per-step time over the rounds, divided by AdamW's; wall time is the
   headline, process CPU time is printed beside it (less sensitive to a busy machine). A
   "fwd+bwd only" row (forward and backward, no optimizer) shows what dominates the step.
2. Flatness (--sharpness). Each method trains for a few hundred steps through the real
   training path (flatgen.train.train with a config from flatgen.config.build_config), from
   the same init and seed; then lambda_max of the fixed-data diffusion loss
   (flatgen.flatness.sharpness_loss_fn) and the worst-case loss increase within an L2
   ball (flatgen.analysis.worst_case_sharpness) are measured, relative to AdamW's, and each
   cheap variant's share of SAM's reduction is reported, next to the sample quality (W2 above
   the real-data floor and digits-FID at T'=20, adm sampler; flatgen.evaluate.evaluate_quality)
   so that a variant cannot pass by over-regularizing. A second AdamW seed gives the
   seed-to-seed spread to read the differences against. With --out, the runs are kept there
   and a finished run of the identical config is reused instead of retrained.

Targets (issue): SAM <= 2.05x AdamW; at least one cheap variant <= 1.25x that keeps >= 70% of
SAM's reduction in lambda_max or in perturbation sharpness (here: and keeps the quality).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import add_threads_option, finished_run, load, machine  # benchmarks/_common.py

from flatgen.config import build_config
from flatgen.data import load_dataset
from flatgen.diffusion import NoiseSchedule, diffusion_loss
from flatgen.models import build_model
from flatgen.train import Method, load_run, train
from flatgen.train.loop import make_accelerator, micro_batches
from flatgen.train.step import train_step

BLOCK = 10  # steps per timed block: a multiple of every k below
CHEAP = ("LookSAM k=5", "MomentumSAM", "SAM every 2", "SAM every 5")
STEP_TARGET = {"SAM": 2.05, **{name: 1.25 for name in CHEAP}}
SHARE_TARGET = 0.70


def methods(rho: float, asam_rho: float) -> list[tuple[str, list[str], float]]:
    """(name, config overrides, forward+backward passes per step) of every compared method."""
    sam = ["method.preset=sam", f"method.sam.rho={rho}"]
    return [
        ("AdamW", ["method.preset=adm"], 1.0),
        ("SAM", sam, 2.0),
        ("ASAM", ["method.preset=sam", f"method.sam.rho={asam_rho}", "method.sam.adaptive=true"],
         2.0),
        ("LookSAM k=5", [*sam, "method.sam.variant=looksam", "method.sam.k=5"], 1.2),
        ("MomentumSAM", [*sam, "method.sam.variant=momentumsam"], 1.0),
        ("SAM every 2", [*sam, "method.sam.variant=sam-every-k", "method.sam.k=2"], 1.5),
        ("SAM every 5", [*sam, "method.sam.variant=sam-every-k", "method.sam.k=5"], 1.2),
    ]


def base_overrides(args: argparse.Namespace, steps: int, seed: int) -> list[str]:
    return [
        f"train.batch_size={args.batch}",
        f"train.steps={steps}",
        f"train.warmup_steps={min(100, steps // 10)}",
        f"train.seed={seed}",
        f"train.ckpt_every={steps}",
        "train.cpu=true",
    ]


# -- 1. step time ------------------------------------------------------------------------------


def time_steps(args: argparse.Namespace, table: list[tuple[str, list[str], float]]) -> dict:
    """Median per-step wall and CPU seconds of every method, interleaved over rounds."""
    n_steps = args.warmup + args.rounds * BLOCK
    cfgs = {name: build_config({}, [*base_overrides(args, n_steps, args.seed), *ov])
            for name, ov, _ in table}
    cfg0 = cfgs["AdamW"]
    train_x, _ = load_dataset(cfg0.data)
    schedule = NoiseSchedule(cfg0.diffusion.schedule, cfg0.diffusion.timesteps)
    batches = [micro_batches(cfg0, train_x, schedule, step=s, rank=0,
                             world=1) for s in range(n_steps)]
    accelerator = make_accelerator(cfg0)

    def loss_fn(net, mb):
        x0, t, noise, ip_noise = mb
        return diffusion_loss(net, x0, schedule, t=t, noise=noise, ip_gamma=cfg0.method.ip_gamma,
                              ip_noise=ip_noise)

    runners = {}
    for name, _, _ in table:
        cfg = cfgs[name]
        torch.manual_seed(args.seed)  # the same init for every method
        model = build_model(cfg.model.preset, tuple(train_x.shape[1:]), cfg.model.dropout)
        opt = Method(cfg.method, cfg.train).build_optimizer(model.parameters())
        model, opt = accelerator.prepare(model, opt)
        model.train()

        def run(step: int, model=model, opt=opt, clip=cfg.train.grad_clip) -> None:
            train_step(model, opt, batches[step], loss_fn=loss_fn, accelerator=accelerator,
                       grad_clip=clip)

        runners[name] = run

    # forward + backward only (no optimizer): the floor every method pays per pass
    torch.manual_seed(args.seed)
    fb_model = build_model(cfg0.model.preset, tuple(train_x.shape[1:]), cfg0.model.dropout)
    fb_model.train()

    def fwd_bwd(step: int) -> None:
        fb_model.zero_grad(set_to_none=True)
        loss_fn(fb_model, batches[step][0]).backward()

    runners["fwd+bwd only"] = fwd_bwd

    names = list(runners)
    for name in names:  # warm-up: allocator, Adam state, MomentumSAM's first momentum
        for s in range(args.warmup):
            runners[name](s)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        first = args.warmup + r * BLOCK
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            for s in range(first, first + BLOCK):
                runners[name](s)
            wall[name].append((time.perf_counter() - w0) / BLOCK)
            cpu[name].append((time.process_time() - c0) / BLOCK)
        print(f"  round {r + 1}/{args.rounds}: AdamW {wall['AdamW'][-1]:.3f} s/step, "
              f"SAM {wall['SAM'][-1]:.3f} s/step, load {load()}", flush=True)
    out = {}
    for name in names:
        paired = [w / a for w, a in zip(wall[name], wall["AdamW"], strict=True)]
        out[name] = {
            "wall_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "wall_rounds": wall[name],
            "cpu_rounds": cpu[name],
            "paired_min": min(paired),
            "paired_max": max(paired),
        }
    for name in names:
        out[name]["ratio"] = out[name]["wall_s"] / out["AdamW"]["wall_s"]
        out[name]["cpu_ratio"] = out[name]["cpu_s"] / out["AdamW"]["cpu_s"]
    return out


# -- 2. flatness ---------------------------------------------------------------------------------


def train_and_measure(args: argparse.Namespace, name: str, overrides: list[str], seed: int,
                      root: Path) -> dict:
    from flatgen.analysis import hessian_eigenvalues, worst_case_sharpness
    from flatgen.evaluate import evaluate_quality
    from flatgen.flatness import sharpness_loss_fn

    cfg = build_config({}, [*base_overrides(args, args.sharpness_steps, seed), *overrides])
    run_dir = root / f"{name.replace(' ', '_').replace('=', '')}_seed{seed}"
    done = finished_run(run_dir, cfg)
    reused = done is not None
    if reused:  # a finished run of the identical config (same seed: same weights)
        train_s, train_cpu, final_loss = float(done["seconds"]), None, float(done["final_loss"])
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        c0 = time.process_time()
        result = train(cfg, run_dir, progress=False)
        train_s, train_cpu, final_loss = result.seconds, time.process_time() - c0, result.final_loss
    run = load_run(run_dir)
    model = run.model("raw")
    loss_fn = sharpness_loss_fn(run, batch=args.sharpness_batch)
    with torch.no_grad():
        loss0 = float(loss_fn(model))
    eig = hessian_eigenvalues(model, loss_fn, k=1, tol=args.tol, max_iter=args.max_iter)
    worst = worst_case_sharpness(model, loss_fn, rhos=[args.worst_rho])
    q = evaluate_quality(run, weights=("raw",), steps=(20,), samplers=("adm",), n=args.n_eval,
                         progress=False)
    row = q["results"][0]
    return {
        "train_s": train_s,
        "train_cpu_s": train_cpu,
        "reused": reused,
        "final_train_loss": final_loss,
        "loss_fixed": loss0,
        "lambda_max": float(eig.vals[0]),
        "hvps": eig.n_matvecs,
        "worst": float(worst.increase[0]),
        "w2": float(row["w2"]),
        "w2_excess": float(row["w2"]) - float(q["floor"]["w2_floor"]),
        "fid": float(row.get("digits_fid", math.nan)),
    }


def share(base: float, sam: float, value: float) -> float:
    """The fraction of SAM's reduction (base - sam) that `value` achieves."""
    gap = base - sam
    return (base - value) / gap if gap > 0 else math.nan


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 1 warm-up step; with --sharpness 20 steps, small Hessian batch")
    ap.add_argument("--rho", type=float, default=0.01,
                    help="SAM radius of every SAM variant (0.01: the digits default that "
                         "benchmarks/rho_sweep.py recommends)")
    ap.add_argument("--asam-rho", type=float, default=None,
                    help="ASAM radius (default 10 x rho: ASAM needs about 10x larger rho)")
    ap.add_argument("--batch", type=int, default=128, help="training batch")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per method (10)")
    add_threads_option(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sharpness", action="store_true",
                    help="also train every method briefly and compare lambda_max")
    ap.add_argument("--sharpness-steps", type=int, default=None, help="training steps (400)")
    ap.add_argument("--sharpness-batch", type=int, default=None,
                    help="fixed (x0, t, noise) triples for the Hessian (256)")
    ap.add_argument("--worst-rho", type=float, default=0.5,
                    help="radius of the worst-case (perturbation) sharpness")
    ap.add_argument("--noise-seeds", type=int, default=None,
                    help="extra AdamW seeds for the seed-to-seed spread (1; quick 0)")
    ap.add_argument("--tol", type=float, default=1e-2, help="lambda_max relative tolerance")
    ap.add_argument("--n-eval", type=int, default=None,
                    help="samples for W2/FID at T'=20 (297 = the test set; quick 64)")
    ap.add_argument("--max-iter", type=int, default=60, help="Lanczos HVP budget")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the trained runs and results.json here (default: a temp dir); "
                         "finished runs of an identical config found there are reused")
    args = ap.parse_args()
    q = args.quick
    defaults = dict(rounds=1 if q else 5, warmup=1 if q else 10,
                    sharpness_steps=20 if q else 400, sharpness_batch=32 if q else 256,
                    noise_seeds=0 if q else 1, n_eval=64 if q else 297)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.asam_rho is None:
        args.asam_rho = 10 * args.rho
    torch.set_num_threads(args.threads)
    table = methods(args.rho, args.asam_rho)
    passes = {name: p for name, _, p in table}
    t_start, c_start = time.perf_counter(), time.process_time()

    print("== inputs")
    print(f"command        {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine        {machine()}; load avg (1/5/15 min) at start {load()}")
    print(f"torch          {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model / data   unet-digits on digits 8x8, batch {args.batch}, seed {args.seed}, "
          f"AdamW base (lr 2e-3), grad clip 1.0")
    print(f"methods        SAM rho {args.rho:g}; ASAM rho {args.asam_rho:g}; LookSAM k=5 "
          f"alpha 0.7; MomentumSAM rho {args.rho:g}; SAM every k=2, k=5 (rho {args.rho:g})")
    print(f"timing         {args.warmup} warm-up steps excluded, {args.rounds} interleaved rounds "
          f"x {BLOCK} steps, rotated order, medians")
    if args.sharpness:
        print(f"flatness       {args.sharpness_steps} training steps per method (same init, "
              f"seed {args.seed}); lambda_max (tol {args.tol}) and worst-case sharpness at "
              f"r={args.worst_rho:g} on {args.sharpness_batch} fixed (x0, t, noise); "
              f"{args.noise_seeds} extra AdamW seed(s)")
    if args.quick:
        print("quick          a smoke check of the script: the numbers are not a measurement")
    print("\n== 1. step time", flush=True)
    timing = time_steps(args, table)
    head = (f"{'method':14s} {'passes':>6s} {'s/step':>7s} {'ratio':>6s} {'round range':>12s} "
            f"{'cpu ratio':>9s} {'target':>7s} {'met':>4s}")
    print(head)
    print("-" * len(head))
    for name, res in timing.items():
        target = STEP_TARGET.get(name)
        met = "" if target is None else ("yes" if res["ratio"] <= target else "NO")
        p = passes.get(name)
        print(f"{name:14s} {'-' if p is None else f'{p:g}':>6s} {res['wall_s']:7.3f} "
              f"{res['ratio']:5.2f}x {res['paired_min']:5.2f}-{res['paired_max']:4.2f}x "
              f"{res['cpu_ratio']:8.2f}x {'' if target is None else f'<={target:g}x':>7s} "
              f"{met:>4s}")
    fb = timing["fwd+bwd only"]["wall_s"] / timing["AdamW"]["wall_s"]
    print(f"forward+backward is {fb:.0%} of an AdamW step (the optimizer, clipping and step "
          f"bookkeeping the rest); a step of p passes should cost about {fb:.2f} p + "
          f"{1 - fb:.2f} x AdamW")
    print(f"load at the end of the timing: {load()}", flush=True)

    flat: dict[str, dict] = {}
    noise: dict = {}
    if args.sharpness:
        print("\n== 2. flatness after brief training (raw weights)", flush=True)
        root = args.out or Path(tempfile.mkdtemp(prefix="sam_cost_"))
        root.mkdir(parents=True, exist_ok=True)
        jobs = [(name, ov, args.seed) for name, ov, _ in table]
        jobs += [("AdamW", table[0][1], args.seed + 1 + i) for i in range(args.noise_seeds)]
        extra = []
        for name, ov, seed in jobs:
            res = train_and_measure(args, name, ov, seed, root)
            print(f"  {name} seed {seed}: train {res['train_s']:.0f} s"
                  f"{' (reused run)' if res['reused'] else ''}, lambda_max "
                  f"{res['lambda_max']:.4g} ({res['hvps']} HVPs), worst {res['worst']:.4g}, "
                  f"load {load()}", flush=True)
            if seed == args.seed:
                flat[name] = res
            else:
                extra.append(res)
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
        base, sam = flat["AdamW"], flat["SAM"]
        if extra:
            for key in ("lambda_max", "worst", "w2_excess", "fid"):
                vals = [base[key], *(e[key] for e in extra)]
                noise[key] = (max(vals) - min(vals)) / (sum(vals) / len(vals))
        head = (f"{'method':14s} {'lambda_max':>10s} {'rel':>6s} {'share':>6s} "
                f"{f'worst@{args.worst_rho:g}':>9s} {'rel':>6s} {'share':>6s} {'loss':>7s} "
                f"{'W2-floor':>8s} {'FID':>6s} {'train s':>7s} {'train x':>7s}")
        print(head)
        print("-" * len(head))
        for name, res in flat.items():
            res["lambda_rel"] = res["lambda_max"] / base["lambda_max"]
            res["worst_rel"] = res["worst"] / base["worst"]
            res["lambda_share"] = share(base["lambda_max"], sam["lambda_max"], res["lambda_max"])
            res["worst_share"] = share(base["worst"], sam["worst"], res["worst"])
            res["train_ratio"] = res["train_s"] / base["train_s"]
            shown = name not in ("AdamW",)
            print(f"{name:14s} {res['lambda_max']:10.4g} {res['lambda_rel']:6.3f} "
                  f"{res['lambda_share'] if shown else math.nan:6.2f} {res['worst']:9.4g} "
                  f"{res['worst_rel']:6.3f} {res['worst_share'] if shown else math.nan:6.2f} "
                  f"{res['loss_fixed']:7.4f} {res['w2_excess']:8.4f} {res['fid']:6.2f} "
                  f"{res['train_s']:7.0f} {res['train_ratio']:6.2f}x")
        print("share: (AdamW - method) / (AdamW - SAM), 1 = all of SAM's reduction; loss: the "
              "fixed-batch diffusion loss; W2-floor, FID: T'=20 adm sampler, n="
              f"{args.n_eval}, W2 above the real-data floor; train x: wall time of the whole "
              "training run over AdamW's (not interleaved, so load moves it)")
        if noise:
            print("AdamW seed-to-seed spread (max - min) / mean: "
                  + ", ".join(f"{k} {v:.1%}" for k, v in noise.items()))

    print("\n== targets")
    sam_ratio = timing["SAM"]["ratio"]
    print(f"SAM step time {sam_ratio:.2f}x AdamW (target <= 2.05x): "
          f"{'met' if sam_ratio <= 2.05 else 'MISSED'}")
    cheap_fast = [n for n in CHEAP if timing[n]["ratio"] <= 1.25]
    print(f"cheap variants <= 1.25x: {', '.join(cheap_fast) or 'none'}")
    winners = []
    if args.sharpness:
        tol_w2 = max(0.10, 2 * noise.get("w2_excess", 0.0))
        tol_fid = max(0.10, 2 * noise.get("fid", 0.0))
        print(f"quality kept: W2-floor <= (1 + {tol_w2:.2f}) x and FID <= (1 + {tol_fid:.2f}) x "
              f"AdamW's (max(10%, 2 x AdamW seed spread))")
        for n in cheap_fast:
            s_l, s_w = flat[n]["lambda_share"], flat[n]["worst_share"]
            flat_ok = (s_l >= SHARE_TARGET) or (s_w >= SHARE_TARGET)
            kept = flat[n]["w2_excess"] <= (1 + tol_w2) * base["w2_excess"] and not (
                flat[n]["fid"] > (1 + tol_fid) * base["fid"])
            print(f"  {n}: {timing[n]['ratio']:.2f}x, share of SAM's reduction: lambda_max "
                  f"{s_l:.0%}, worst-case {s_w:.0%} -> {'meets' if flat_ok else 'misses'} the "
                  f"70% bar; quality {'kept' if kept else 'LOST'} (W2-floor "
                  f"{flat[n]['w2_excess'] / base['w2_excess']:.2f}x, FID "
                  f"{flat[n]['fid'] / base['fid']:.2f}x AdamW's)")
            if flat_ok and kept:
                winners.append(n)
        print(f"cheap variant <= 1.25x keeping >= 70% of SAM's reduction and the quality: "
              f"{', '.join(winners) or 'NONE (target missed)'}")
        sam_rel = sam["lambda_max"] / base["lambda_max"]
        if noise and abs(1 - sam_rel) < 2 * noise.get("lambda_max", 0):
            print(f"caution: SAM's lambda_max reduction ({1 - sam_rel:.0%}) is within twice the "
                  f"AdamW seed spread ({noise['lambda_max']:.0%}); the shares are noisy")
    else:
        print("(run with --sharpness for the flatness half of the cheap-variant target)")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s wall, "
          f"{time.process_time() - c_start:.0f} s CPU; load at end {load()}")

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"inputs": {k: str(v) if isinstance(v, Path) else v
                              for k, v in vars(args).items()},
                   "machine": machine(), "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "timing": timing, "flatness": flat,
                   "noise": noise, "cheap_winners": winners}
        (args.out / "results.json").write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
