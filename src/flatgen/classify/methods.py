"""How each method trains: its optimizer, how a batch is prepared (adversarial examples, soft
labels) and its loss. `train.fit` runs a Recipe through flatgen's SAM-aware train_step."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flatgen.classify.config import AdversarialMethod, SAMMethod, WRMMethod, _Method
from flatgen.classify.evaluate import adversarial_examples
from flatgen.optim import sam_adamw
from flatgen.optim.wrm import classifier_per_sample_loss, wrm_perturb
from flatgen.robustness.util import evaluating

Batch = tuple[Tensor, ...]
# prepare(model, x, y, generator=g) -> the batch the loss sees
Prepare = Callable[..., Batch]
LossFn = Callable[[nn.Module, Batch], Tensor]


def cross_entropy_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean cross-entropy of model(x) against hard labels y; batch = (x, y)."""
    x, y = batch[:2]
    return F.cross_entropy(model(x), y)


def clean_batch(model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator) -> Batch:
    return x, y


@dataclass
class Recipe:
    """One training phase: optimizer factory, batch preparation and loss."""

    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    prepare: Prepare = clean_batch
    loss: LossFn = cross_entropy_loss


def make_optimizer(
    spec: _Method, params: Iterable[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """AdamW with the method's weight decay, wrapped in the SAM variant a SAMMethod names."""
    kw = dict(lr=lr, weight_decay=spec.weight_decay)
    if not isinstance(spec, SAMMethod):
        return torch.optim.AdamW(params, **kw)
    sam = spec.sam  # the diffusion config's SAMConfig, built as flatgen.train builds it
    return sam_adamw(
        params,
        sam.variant,
        rho=sam.rho,
        adaptive=sam.adaptive,
        eta=sam.eta,
        options={"k": sam.k, "alpha": sam.alpha},
        **kw,
    )


def recipe(spec: _Method, lr: float) -> Recipe:
    """The single training phase of every method but distillation (see distillation_recipes)."""

    def opt(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(spec, params, lr)

    if isinstance(spec, AdversarialMethod):

        def pgd_batch(
            model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator
        ) -> Batch:
            # examples at the current weights, as in Madry et al.
            return adversarial_examples(
                model,
                x,
                y,
                eps=spec.eps,
                norm=spec.norm,
                attack="pgd",
                steps=spec.steps,
                step_size=spec.step_size,
                random_start=spec.random_start,
                generator=generator,
            ), y

        return Recipe(opt, pgd_batch)
    if isinstance(spec, WRMMethod):

        def wrm_batch(
            model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator
        ) -> Batch:
            with evaluating(model, freeze=True):  # input gradients only, dropout off
                adv = wrm_perturb(
                    classifier_per_sample_loss(model, y),
                    x,
                    spec.gamma,
                    steps=spec.steps,
                    step_size=spec.step_size,
                )
            return adv, y  # unclamped: WRM's transport ball is not confined to the pixel box

        return Recipe(opt, wrm_batch)
    return Recipe(opt)


# ---------------------------------------------------------------- defensive distillation


def soft_labels(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T): the teacher's softened class probabilities."""
    return F.softmax(logits / temperature, dim=1)


def distillation_loss(student_logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(targets || softmax(student_logits / T)), mean over the batch.

    targets are soft labels (rows summing to 1). The KL differs from the cross-entropy
    -sum q log p by the targets' entropy, a constant, so the gradients are the same; T^2 keeps
    their scale independent of T (Hinton et al. 2015).
    """
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = (torch.special.xlogy(targets, targets) - targets * log_p).sum(1)
    return temperature**2 * kl.mean()


def distillation_recipes(
    spec: _Method, lr: float, *, temperature: float, teacher: nn.Module
) -> tuple[Recipe, Recipe]:
    """(teacher phase, student phase): the teacher learns hard labels with logits / T; the
    student learns the teacher's soft labels at T. The student is deployed at T = 1."""

    def opt(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(spec, params, lr)

    def teacher_loss(model: nn.Module, batch: Batch) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x) / temperature, y)

    def with_soft_labels(
        model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator
    ) -> Batch:
        with torch.no_grad(), evaluating(teacher):
            return x, y, soft_labels(teacher(x), temperature)

    def student_loss(model: nn.Module, batch: Batch) -> Tensor:
        x, _, q = batch
        return distillation_loss(model(x), q, temperature)

    return Recipe(opt, loss=teacher_loss), Recipe(opt, with_soft_labels, student_loss)
