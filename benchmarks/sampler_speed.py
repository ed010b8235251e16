"""flatgen's DDIM sampler vs diffusers' DDIMPipeline on the same UNet, steps and batch.

Both run the same UNet2DModel (model.unet of unet-digits, random init) with a DDIMScheduler
built from flatgen's betas, the same timesteps (timestep_spacing="linspace" is flatgen's
respacing) and the same x_T; UNet calls are counted to show both do `steps` evaluations.
Timings alternate between the two (A B A B ...) so load drifts hit both alike; median and
best-of are reported, and the time spent outside the UNet (the sampler's own overhead) is
measured with hooks. Ratio = diffusers time / flatgen time (> 1: flatgen is faster).

    .venv/bin/python benchmarks/sampler_speed.py [--steps 50 20] [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import diffusers
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from flatgen.diffusion import NoiseSchedule, sample
from flatgen.diffusion.samplers import denoise_chain
from flatgen.models import build_model


def ddim_pipeline(model: torch.nn.Module, schedule: NoiseSchedule) -> DDIMPipeline:
    """A DDIMPipeline over model.unet with flatgen's betas and respacing."""
    scheduler = DDIMScheduler(
        num_train_timesteps=schedule.timesteps,
        trained_betas=schedule.betas.float().numpy(),
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,  # the last step goes to abar = 1, as flatgen's does
        timestep_spacing="linspace",  # round(linspace(0, T-1, steps)) = flatgen's respaced()
        prediction_type="epsilon",
    )
    pipe = DDIMPipeline(unet=model.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class CallCounter:
    """Forward pre/post hooks counting UNet evaluations and the time spent inside them."""

    def __init__(self) -> None:
        self.calls, self.seconds, self._t0 = 0, 0.0, 0.0

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def pre(self, *args: object) -> None:
        self._t0 = time.perf_counter()

    def post(self, *args: object) -> None:
        self.calls += 1
        self.seconds += time.perf_counter() - self._t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 20])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    model = build_model("unet-digits", (1, 8, 8)).eval()
    schedule = NoiseSchedule("linear", 1000)
    pipe = ddim_pipeline(model, schedule)
    counter = CallCounter()
    model.unet.register_forward_pre_hook(counter.pre)
    model.unet.register_forward_hook(counter.post)
    shape = (args.batch, 1, 8, 8)

    print("sampler speed: flatgen sample(sampler='ddim') vs diffusers DDIMPipeline")
    print(
        f"  machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}"
        f" torch_threads={torch.get_num_threads()} load_avg={os.getloadavg()}"
    )
    print(
        f"  torch {torch.__version__}, diffusers {diffusers.__version__}, python "
        f"{platform.python_version()}"
    )
    n_params = sum(p.numel() for p in model.unet.parameters())
    print(
        f"  model: unet-digits (UNet2DModel, {n_params} params, random init), 1x8x8, "
        f"batch {args.batch}, repeats {args.repeats} (median), seed {args.seed}"
    )

    def run_flatgen(steps: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(args.seed)
        return sample(model, schedule, shape, steps=steps, sampler="ddim", generator=g)

    def run_diffusers(steps: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(args.seed)
        return pipe(
            batch_size=args.batch, generator=g, eta=0.0, num_inference_steps=steps, output_type="pt"
        ).images

    # same math: on diffusers' own chain ("leading": t = 0, T/steps, ...; prev = t - T/steps)
    # and with the eps recomputed from the clipped x0 (as flatgen and ADM do), both agree
    leading = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    check = DDIMPipeline(unet=model.unet, scheduler=leading)
    check.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(args.seed)
    x_d = check(
        batch_size=16,
        generator=g,
        num_inference_steps=20,
        output_type="pt",
        use_clipped_model_output=True,
    ).images
    x_T = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        x_f = denoise_chain(
            model, schedule, x_T, ts=sorted(check.scheduler.timesteps.tolist()), sampler="ddim"
        )
    same = ((x_f / 2 + 0.5).clamp(0, 1) - x_d).abs().max().item()
    print(f"  same-math check (20 steps on diffusers' 'leading' chain): max |diff| = {same:.2g}")

    for steps in args.steps:
        pipe.scheduler.set_timesteps(steps)
        same_ts = sorted(pipe.scheduler.timesteps.tolist()) == schedule.respaced(steps)
        counter.reset()
        x_f = run_flatgen(steps)
        calls_f = counter.calls
        counter.reset()
        x_d = run_diffusers(steps)
        calls_d = counter.calls
        # diffusers returns images in [0, 1]; with "linspace" its DDIM steps to t - T // steps,
        # not to the next timestep, and keeps the unclipped eps, so these samples differ
        diff = ((x_f / 2 + 0.5).clamp(0, 1) - x_d).abs().mean().item()
        times: dict[str, list[float]] = {"flatgen": [], "diffusers": []}
        outside: dict[str, list[float]] = {"flatgen": [], "diffusers": []}
        for _ in range(args.repeats):
            for name, fn in (("flatgen", run_flatgen), ("diffusers", run_diffusers)):
                counter.reset()
                t0 = time.perf_counter()
                fn(steps)
                times[name].append(time.perf_counter() - t0)
                outside[name].append(times[name][-1] - counter.seconds)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"\nsteps={steps}: UNet calls flatgen={calls_f} diffusers={calls_d}; "
            f"same timesteps: {same_ts}; mean |sample diff| in [0,1] units: {diff:.3g}"
        )
        for k, v in times.items():
            print(
                f"  {k:9s} median {med[k]:.3f} s  (min {min(v):.3f}, max {max(v):.3f}, "
                f"{med[k] / steps * 1e3:.1f} ms/step; outside the UNet: "
                f"{statistics.median(outside[k]) / steps * 1e3:.2f} ms/step)"
            )
        print(
            f"  ratio diffusers/flatgen = {med['diffusers'] / med['flatgen']:.3f} median, "
            f"{min(times['diffusers']) / min(times['flatgen']):.3f} best-of  (> 1: flatgen faster)"
        )
    print(f"\nload_avg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
