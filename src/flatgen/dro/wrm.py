"""WRM (Sinha, Namkoong, Duchi 2018): Wasserstein robust loss by inner gradient ascent.

phi_gamma(theta; x0) = sup_x [ loss(theta; x) - gamma * ||x - x0||^2 ]. The sup is found by a
few ascent steps with step size step_size / sqrt(t + 1); the parameter gradient is the loss
gradient at the (detached) maximizer, which is the gradient of phi_gamma (Danskin's theorem)
when the inner problem is strongly concave (gamma larger than the loss's smoothness in x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from flatgen.diffusion.schedule import NoiseSchedule

PerSampleLoss = Callable[[Tensor], Tensor]


def _sq_dist(x: Tensor, x0: Tensor) -> Tensor:
    """Per-sample squared Euclidean distance ||x_i - x0_i||^2 (all non-batch dims)."""
    return (x - x0).flatten(1).pow(2).sum(1)


def _check_loss(values: Tensor, n: int) -> Tensor:
    if values.shape != (n,):
        raise ValueError(f"per_sample_loss must return shape ({n},), got {tuple(values.shape)}")
    return values


def wrm_perturb(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    steps: int = 15,
    step_size: float | None = None,
) -> Tensor:
    """The inner maximizer of per_sample_loss(x) - gamma * ||x - x0||^2, detached.

    per_sample_loss maps a batch shaped like x0 to one loss per sample. Ascent starts at x0;
    step t moves by step_size / sqrt(t + 1) times the gradient (step_size defaults to
    1 / (2 gamma), the step that solves the penalty's quadratic exactly). Parameter gradients
    are not touched.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    lr = 1.0 / (2.0 * gamma) if step_size is None else step_size
    x0 = x0.detach()
    x = x0.clone()
    for t in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            obj = _check_loss(per_sample_loss(x), len(x0)) - gamma * _sq_dist(x, x0)
            (grad,) = torch.autograd.grad(obj.sum(), x)
        x = (x + lr / math.sqrt(t + 1) * grad).detach()
    return x


def robust_objective(per_sample_loss: PerSampleLoss, x: Tensor, x0: Tensor, gamma: float) -> Tensor:
    """Per-sample loss(x) - gamma * ||x - x0||^2 (phi_gamma when x is the inner maximizer)."""
    return _check_loss(per_sample_loss(x), len(x0)) - gamma * _sq_dist(x, x0.detach())


def wrm_loss(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    steps: int = 15,
    step_size: float | None = None,
) -> Tensor:
    """The robust loss E[phi_gamma] on the batch x0; backward gives the WRM parameter gradient."""
    x_adv = wrm_perturb(per_sample_loss, x0, gamma, steps, step_size)
    return robust_objective(per_sample_loss, x_adv, x0, gamma).mean()


@dataclass
class WRMCertificate:
    """Upper bounds on the worst-case loss over Wasserstein balls around the batch.

    For every rho: sup { E_P[loss] : W_c(P, P_batch) <= rho } <= gamma * rho + E[phi_gamma],
    with transport cost c(x, x0) = ||x - x0||^2 (so rho is in squared data units). The bound
    holds for any gamma > 0 provided phi_gamma is the true sup; an inexact inner ascent
    underestimates phi_gamma, hence the bound.
    """

    gamma: float
    clean_loss: float  # E[loss(x0)]
    robust_loss: float  # E[phi_gamma]
    adv_loss: float  # E[loss(x_adv)], the worst case WRM found
    transport_cost: float  # E||x_adv - x0||^2, the radius at which WRM found adv_loss
    rhos: list[float]
    bounds: list[float]  # gamma * rho + robust_loss, one per rho

    def bound(self, rho: float) -> float:
        """gamma * rho + E[phi_gamma]."""
        return self.gamma * rho + self.robust_loss

    def to_dict(self) -> dict:
        return asdict(self)


def wrm_certificate(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    rhos: Sequence[float],
    steps: int = 15,
    step_size: float | None = None,
) -> WRMCertificate:
    """The certificate gamma * rho + E[phi_gamma] for each radius rho, plus what WRM found."""
    if any(r < 0 for r in rhos):
        raise ValueError(f"radii must be >= 0, got {list(rhos)}")
    x_adv = wrm_perturb(per_sample_loss, x0, gamma, steps, step_size)
    with torch.no_grad():
        clean = _check_loss(per_sample_loss(x0), len(x0)).mean().item()
        adv = per_sample_loss(x_adv).mean().item()
        cost = _sq_dist(x_adv, x0).mean().item()
    robust = adv - gamma * cost
    return WRMCertificate(
        gamma=float(gamma),
        clean_loss=clean,
        robust_loss=robust,
        adv_loss=adv,
        transport_cost=cost,
        rhos=[float(r) for r in rhos],
        bounds=[gamma * float(r) + robust for r in rhos],
    )


def classifier_per_sample_loss(model: nn.Module, labels: Tensor) -> PerSampleLoss:
    """Cross-entropy per input: WRM for classifiers perturbs the inputs."""
    return lambda x: F.cross_entropy(model(x), labels, reduction="none")


def diffusion_per_sample_loss(
    model: nn.Module, schedule: NoiseSchedule, t: Tensor, noise: Tensor
) -> PerSampleLoss:
    """Diffusion loss per clean sample at fixed (t, noise): WRM perturbs x0 before noising."""
    from flatgen.diffusion.loss import diffusion_loss

    return lambda x0: diffusion_loss(model, x0, schedule, t, noise, reduction="none")
