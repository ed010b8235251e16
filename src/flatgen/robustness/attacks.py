"""Adversarial attacks on diffusion models and classifiers, built on flatgen.robustness.pgd.

The diffusion attacks (attack_input: the denoiser input x_t; attack_noise: the initial noise
x_T) return LADDER RECORDS (flatgen.ladder): levels = the attack radii eps, clean = the score
without attack, values = the score under attack, lower is better. They make no decision about
robustness: a claim compares models against one absolute threshold (`robust_level` applies one
to a record, for a single run). This module gathers them with the classifier attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flatgen.robustness.attack_input import attack_denoiser_input
from flatgen.robustness.attack_noise import attack_initial_noise, attack_initial_noise_ladders
from flatgen.robustness.pgd import NORMS, check_norm, fgsm, pgd
from flatgen.robustness.record import (
    ladder_levels,
    ladder_record,
    robust_level,
    score_value,
    with_robust_level,
)
from flatgen.robustness.util import evaluating, make_generator

__all__ = [
    "NORMS",
    "attack_denoiser_input",
    "attack_initial_noise",
    "attack_initial_noise_ladders",
    "classifier_robust_accuracy",
    "fgsm",
    "ladder_levels",
    "ladder_record",
    "pgd",
    "robust_level",
    "score_value",
    "with_robust_level",
]
STREAMS = ("main", "select")  # the verdict's noise, and the separate noise that picks the level


# ---------------------------------------------------------------- classifiers


def classifier_robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_list: Sequence[float],
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of a classifier (logits = model(x)) under FGSM or PGD on its inputs, per eps.

    Inputs are expected in the clamp box ([0, 1] by default). step_size defaults to
    2.5 * eps / steps. Returns {attack, norm, eps: [0, *sorted eps_list], accuracy: [...],
    clean_accuracy}.
    """
    check_norm(norm)
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}")
    eps_all = [0.0, *ladder_levels(eps_list)] if any(e != 0 for e in eps_list) else [0.0]
    accuracy = []
    with evaluating(model, freeze=True):
        for k, eps in enumerate(eps_all):
            gen = make_generator(seed, "classifier", attack, norm, k)
            correct = 0
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]

                def objective(z: torch.Tensor, yb: torch.Tensor = yb) -> torch.Tensor:
                    return F.cross_entropy(model(z), yb, reduction="none")

                if attack == "fgsm":
                    adv = fgsm(objective, xb, eps=eps, norm=norm, clamp=clamp)
                else:
                    adv = pgd(objective, xb, eps=eps, norm=norm, steps=steps, restarts=restarts,
                              step_size=step_size, random_start=random_start, clamp=clamp,
                              generator=gen)
                with torch.no_grad():
                    correct += (model(adv).argmax(1) == yb).sum().item()
            accuracy.append(correct / x.shape[0])
    return {"attack": attack, "norm": norm, "eps": eps_all, "accuracy": accuracy,
            "clean_accuracy": accuracy[0]}
