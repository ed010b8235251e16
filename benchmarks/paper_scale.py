"""The paper's scale on this machine: the ADM-ES CIFAR-10 U-Net (preset unet-adm-cifar10), two
SAM (or AdamW) steps and a top-1 Hessian eigenvalue (5 Lanczos steps) at batch 2 on a CIFAR-shaped
stand-in (random 3x32x32 images: the cost does not depend on the pixels). Prints the step time
and the peak memory (CPU: the process's peak RSS; GPU: torch's peak allocation).

Not part of the test suite:  .venv/bin/python benchmarks/paper_scale.py [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from _common import add_threads_option, load, machine

from flatgen.analysis import hessian_eigenvalues
from flatgen.diffusion import NoiseSchedule, diffusion_loss, fixed_diffusion_loss_fn
from flatgen.models import build_model
from flatgen.optim import SAM


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_threads_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--optimizer", choices=["sam", "adamw"], default="sam")
    parser.add_argument("--lanczos", type=int, default=5, help="Lanczos steps (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("unet-adm-cifar10", (3, 32, 32)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    schedule = NoiseSchedule("cosine", 1000)
    x0 = torch.rand(args.batch, 3, 32, 32, device=device) * 2 - 1
    if args.optimizer == "sam":
        opt = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=args.dtype == "bfloat16")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        t = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        with autocast:
            loss = diffusion_loss(model, x0, schedule, t=t, noise=noise)
        loss.backward()
        return loss

    times = []
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step(closure)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print(f"machine: {machine()} ({device}); load {load()}; {args.threads} torch thread(s)")
    print(f"unet-adm-cifar10: {n_params / 1e6:.1f}M parameters, batch {args.batch}, {args.dtype}")
    print(f"{args.optimizer} step: {times[0]:.3f} s (first), {times[1]:.3f} s (second)")
    if args.lanczos:
        loss_fn = fixed_diffusion_loss_fn(x0, schedule, seed=0)
        t0 = time.perf_counter()
        eig = hessian_eigenvalues(model.eval(), loss_fn, k=1, max_iter=args.lanczos)
        if device.type == "cuda":
            torch.cuda.synchronize()
        eig_s = time.perf_counter() - t0
        print(f"top-1 eigenvalue, {args.lanczos} Lanczos steps ({eig.n_matvecs} HVPs): "
              f"{eig_s:.2f} s ({eig_s / eig.n_matvecs:.3f} s per HVP), "
              f"lambda_max {float(eig.vals[0]):.4g}")
    print(f"peak memory: {peak_memory_mb(device):.0f} MiB")


if __name__ == "__main__":
    main()
