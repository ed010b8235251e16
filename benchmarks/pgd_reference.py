"""flatgen's PGD and FGSM against an established attack library (torchattacks).

    .venv/bin/pip install --no-deps torchattacks==3.5.1   # benchmark-only (its torchvision
                                                            # requirement is never imported)
    .venv/bin/python benchmarks/pgd_reference.py [--steps 10] [--train-steps 300]

Two digits classifiers are trained with flatgen.classify (plain, and PGD adversarial training
at eps 0.1 so that not every attack trivially succeeds), same init and seed. On the 297 test
digits in [0, 1], each attack runs in both libraries with the same eps, number of steps and
step size (2.5 * eps / steps), WITHOUT random start, so both are deterministic:

- PGD L-inf vs torchattacks.PGD, PGD L2 vs torchattacks.PGDL2, FGSM L-inf vs torchattacks.FGSM.
- flatgen's pgd returns the best iterate per sample (largest loss seen); torchattacks returns
  the last one. The last iterate of flatgen's trajectory is recorded from the objective's inputs
  (its last call is at the final iterate), so both the trajectory (last vs last) and the
  reported robust accuracy (best vs last) are compared.

Printed per row: robust accuracy of torchattacks, of flatgen's last iterate and of flatgen's
returned (best) examples; max |x_adv(flatgen last) - x_adv(torchattacks)| over all pixels;
the share of samples whose examples agree within 1e-5; and the largest perturbation size
relative to eps (must be <= 1) of both.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from _common import add_threads_option  # benchmarks/_common.py

from flatgen.classify import accuracy, build_classifier, load_classifier_data, train_classifier
from flatgen.classify.config import AdversarialMethod, DataSpec, PlainMethod, TrainSpec
from flatgen.robustness.attacks import fgsm, pgd

BOX = (0.0, 1.0)


def flatgen_attack(model, x, y, attack: str, norm: str, eps: float, steps: int, alpha: float):
    """(returned examples, last iterate) of flatgen's attack, model frozen in eval mode."""
    seen: list[torch.Tensor] = []

    def objective(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return F.cross_entropy(model(z), y, reduction="none")

    if attack == "fgsm":
        adv = fgsm(objective, x, eps=eps, norm=norm, clamp=BOX)
        return adv, adv
    adv = pgd(objective, x, eps=eps, norm=norm, steps=steps, step_size=alpha,
              random_start=False, clamp=BOX)
    return adv, seen[-1]


def reference_attack(model, x, y, attack: str, norm: str, eps: float, steps: int, alpha: float):
    import torchattacks

    if attack == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif norm == "linf":
        atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    else:
        atk = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    return atk(x, y)


def size(d: torch.Tensor, norm: str) -> torch.Tensor:
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--train-steps", type=int, default=300)
    add_threads_option(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
        f"python {platform.python_version()}, {args.threads} thread(s)"
    )
    x, y, xt, yt = load_classifier_data(DataSpec())
    rows = [("fgsm", "linf", e) for e in (0.05, 0.1, 0.2)]
    rows += [("pgd", "linf", e) for e in (0.05, 0.1, 0.2)]
    rows += [("pgd", "l2", e) for e in (0.5, 1.0, 2.0)]
    methods = [PlainMethod(), AdversarialMethod(method="pgd_at", eps=0.1)]
    print(
        f"digits: {len(x)} train / {len(xt)} test images, inputs in [0, 1]; cnn-digits; "
        f"{args.train_steps} training steps; PGD: {args.steps} steps of 2.5 * eps / steps, "
        "no random start"
    )
    header = (
        f"{'model':7} {'attack':11} {'eps':>5} | {'acc ref':>7} {'acc last':>8} "
        f"{'acc best':>8} | {'max|diff|':>9} {'same':>6} | {'size/eps':>8} {'ref':>6}"
    )
    worst = 0.0
    for method in methods:
        torch.manual_seed(0)
        model = build_classifier()
        t0 = time.perf_counter()
        train_classifier(
            model, x, y, method=method, train=TrainSpec(steps=args.train_steps, cpu=True), seed=0
        )
        model.eval().requires_grad_(False)
        print(
            f"\n{method.method}: trained in {time.perf_counter() - t0:.1f} s, "
            f"clean test accuracy {accuracy(model, xt, yt):.3f}"
        )
        print(header)
        print("-" * len(header))
        for attack, norm, eps in rows:
            alpha = 2.5 * eps / args.steps
            best, last = flatgen_attack(model, xt, yt, attack, norm, eps, args.steps, alpha)
            ref = reference_attack(model, xt, yt, attack, norm, eps, args.steps, alpha)
            diff = (last - ref).flatten(1).abs().amax(1)
            worst = max(worst, float(diff.max()))
            name = f"{attack.upper()}-{'Linf' if norm == 'linf' else 'L2'}"
            print(
                f"{method.method:7} {name:11} {eps:5g} | {accuracy(model, ref, yt):7.3f} "
                f"{accuracy(model, last, yt):8.3f} {accuracy(model, best, yt):8.3f} | "
                f"{float(diff.max()):9.2e} {float((diff <= 1e-5).float().mean()):6.1%} | "
                f"{float(size(best - xt, norm).max()) / eps:8.4f} "
                f"{float(size(ref - xt, norm).max()) / eps:6.4f}"
            )
    print(f"\nlargest |flatgen last iterate - torchattacks| over all rows: {worst:.2e}")


if __name__ == "__main__":
    main()
