"""What a trained classifier is measured by: clean and robust accuracy (FGSM / PGD, L-inf / L2,
inputs in [0, 1]) and the sharpness of its training loss on a fixed batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flatgen.analysis import (
    average_case_sharpness,
    hessian_eigenvalues,
    hessian_trace,
    worst_case_sharpness,
)
from flatgen.classify.config import AttackSpec, SharpnessSpec
from flatgen.robustness.attacks import classifier_robust_accuracy, fgsm, pgd
from flatgen.robustness.util import evaluating

BOX = (0.0, 1.0)  # classifier inputs live in [0, 1]
SHARPNESS_KEYS = ("lambda_max", "trace", "worst_case", "average_case")


def robust_key(attack: str, norm: str, eps: float) -> str:
    """Column name of a robust accuracy, e.g. 'pgd-linf@0.1'."""
    return f"{attack}-{norm}@{eps:g}"


def adversarial_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FGSM / PGD examples that raise the cross-entropy within the eps-ball and the [0, 1] box.

    The same objective as flatgen.robustness.classifier_robust_accuracy (which the evaluation
    uses); the model runs in eval mode with its weights frozen, and is left as it was.
    """

    def objective(z: Tensor) -> Tensor:
        return F.cross_entropy(model(z), y, reduction="none")

    with evaluating(model, freeze=True):
        if attack == "fgsm":
            return fgsm(objective, x, eps=eps, norm=norm, clamp=BOX)
        if attack == "pgd":
            return pgd(
                objective,
                x,
                eps=eps,
                norm=norm,
                steps=steps,
                step_size=step_size,
                random_start=random_start,
                clamp=BOX,
                generator=generator,
            )
    raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of x classified as y (eval mode)."""
    with evaluating(model):
        correct = sum(
            (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
            for i in range(0, len(x), batch_size)
        )
    return correct / len(x)


def robust_accuracies(
    model: nn.Module, x: Tensor, y: Tensor, *, spec: AttackSpec, seed: int = 0
) -> dict[str, float]:
    """{'clean': accuracy, 'pgd-linf@0.1': accuracy under that attack, ...} on (x, y).

    PGD takes spec.pgd_steps steps of 2.5 * eps / steps (flatgen.robustness's default).
    """
    out = {"clean": accuracy(model, x, y)}
    for norm, eps_list in (("linf", spec.eps_linf), ("l2", spec.eps_l2)):
        for attack in spec.attacks if eps_list else ():
            res = classifier_robust_accuracy(
                model,
                x,
                y,
                eps_list=eps_list,
                norm=norm,
                attack=attack,
                steps=spec.pgd_steps,
                random_start=spec.random_start,
                clamp=BOX,
                batch_size=spec.batch_size,
                seed=seed,
            )
            for eps, acc in zip(res["eps"], res["accuracy"], strict=True):
                if eps > 0:
                    out[robust_key(attack, norm, eps)] = acc
    return out


def fixed_batch_loss(x: Tensor, y: Tensor) -> Callable[[nn.Module], Tensor]:
    """loss_fn(model) -> mean cross-entropy (T = 1) on the fixed batch (x, y)."""
    return lambda model: F.cross_entropy(model(x), y)


def sharpness_measures(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    spec: SharpnessSpec,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float | bool]:
    """lambda_max and trace of the Hessian, worst-case and average-case loss increase (at
    spec.rho / spec.sigma) of the cross-entropy on the fixed batch (x, y); plus the loss itself."""
    loss_fn = fixed_batch_loss(x, y)
    with evaluating(model), torch.no_grad():
        loss0 = float(loss_fn(model))

    def stage(name: str) -> None:
        if progress is not None:
            progress(name)

    eig = hessian_eigenvalues(model, loss_fn, k=1, max_iter=spec.lanczos_iter, seed=seed)
    stage("lambda_max")
    tr = hessian_trace(model, loss_fn, n_matvecs=spec.trace_matvecs, seed=seed)
    stage("trace")
    worst = worst_case_sharpness(model, loss_fn, [spec.rho], steps=spec.ascent_steps)
    stage("worst-case")
    avg = average_case_sharpness(model, loss_fn, [spec.sigma], draws=spec.draws, seed=seed)
    stage("average-case")
    return {
        "loss": loss0,
        "lambda_max": float(eig.vals[0]),
        "lambda_max_converged": bool(eig.converged),
        "trace": tr.estimate,
        "trace_stderr": tr.stderr,
        "worst_case": worst.increase[0],
        "average_case": avg.increase[0],
    }


class TemperatureScaled(nn.Module):
    """logits / T of a model: same predictions, softer softmax. Attacking it is the gradient
    masking check of defensive distillation (whose student saturates the softmax at T = 1)."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature
