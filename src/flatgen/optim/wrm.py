"""WRM (Sinha, Namkoong, Duchi 2018): Wasserstein robust loss by inner gradient ascent.

phi_gamma(theta; x0) = sup_x [ loss(theta; x) - gamma * ||x - x0||^2 ]. The sup is found by a
few ascent steps with step size step_size / sqrt(t + 1); the parameter gradient is the loss
gradient at the (detached) maximizer, which is the gradient of phi_gamma (Danskin's theorem)
when the inner problem is strongly concave (gamma larger than the loss's smoothness in x).

The certificate gamma * rho + E[phi_gamma] bounds the worst case over a Wasserstein ball only
if phi_gamma is the true sup. `wrm_certificate` therefore checks two things and labels its
result "certificate" only when both hold, else "estimate":
- convergence: the largest per-sample gradient norm of the inner objective at the final
  iterate is below grad_tol (an unconverged ascent underestimates phi_gamma);
- smoothness: gamma exceeds L_hat, an estimate of the Lipschitz constant of grad_x loss (see
  `loss_smoothness`). The penalty's Hessian is 2 gamma I, so gamma > L_hat (Sinha et al.'s
  condition) leaves a factor-2 margin for L_hat being a lower estimate of the true constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flatgen.wrm_config import WRMConfig  # noqa: F401 - the config of this module, re-exported

if TYPE_CHECKING:
    from flatgen.diffusion.schedule import NoiseSchedule

PerSampleLoss = Callable[[Tensor], Tensor]
SMOOTHNESS_METHOD = (
    "max over samples and ascent iterates of ||H v|| (per-sample power iteration on the "
    "Hessian of the loss in x, warm-started along the path) and of the gradient secants "
    "||g(x_t+1) - g(x_t)|| / ||x_t+1 - x_t||: both are lower bounds of the smoothness constant"
)


def _sq_dist(x: Tensor, x0: Tensor) -> Tensor:
    """Per-sample squared Euclidean distance ||x_i - x0_i||^2 (all non-batch dims)."""
    return (x - x0).flatten(1).pow(2).sum(1)


def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def _check_loss(values: Tensor, n: int) -> Tensor:
    if values.shape != (n,):
        raise ValueError(f"per_sample_loss must return shape ({n},), got {tuple(values.shape)}")
    return values


def _inner_grad(per_sample_loss: PerSampleLoss, x: Tensor, x0: Tensor, gamma: float) -> Tensor:
    """grad_x of sum_i [loss_i(x_i) - gamma ||x_i - x0_i||^2] (one row per sample)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        obj = _check_loss(per_sample_loss(x), len(x0)) - gamma * _sq_dist(x, x0)
        (grad,) = torch.autograd.grad(obj.sum(), x)
    return grad


def _ascent(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    *,
    gamma: float,
    steps: int,
    step_size: float | None,
    keep_path: bool = False,
) -> list[Tensor]:
    """The ascent iterates [x_0 = x0, ..., x_steps] (only the last unless keep_path)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    lr = 1.0 / (2.0 * gamma) if step_size is None else step_size
    x0 = x0.detach()
    path = [x0.clone()]
    for t in range(steps):
        grad = _inner_grad(per_sample_loss, path[-1], x0, gamma)
        x = (path[-1] + lr / math.sqrt(t + 1) * grad).detach()
        path = [*path, x] if keep_path else [x]
    return path


def wrm_perturb(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    *,
    steps: int = 15,
    step_size: float | None = None,
) -> Tensor:
    """The inner maximizer of per_sample_loss(x) - gamma * ||x - x0||^2, detached.

    per_sample_loss maps a batch shaped like x0 to one loss per sample. Ascent starts at x0;
    step t moves by step_size / sqrt(t + 1) times the gradient (step_size defaults to
    1 / (2 gamma), the step that solves the penalty's quadratic exactly). Parameter gradients
    are not touched.
    """
    return _ascent(per_sample_loss, x0, gamma=gamma, steps=steps, step_size=step_size)[-1]


def robust_objective(
    per_sample_loss: PerSampleLoss, x: Tensor, x0: Tensor, *, gamma: float
) -> Tensor:
    """Per-sample loss(x) - gamma * ||x - x0||^2 (phi_gamma when x is the inner maximizer)."""
    return _check_loss(per_sample_loss(x), len(x0)) - gamma * _sq_dist(x, x0.detach())


def wrm_loss(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    *,
    steps: int = 15,
    step_size: float | None = None,
) -> Tensor:
    """The robust loss E[phi_gamma] on the batch x0; backward gives the WRM parameter gradient."""
    x_adv = wrm_perturb(per_sample_loss, x0, gamma, steps=steps, step_size=step_size)
    return robust_objective(per_sample_loss, x_adv, x0, gamma=gamma).mean()


def loss_smoothness(
    per_sample_loss: PerSampleLoss, points: Sequence[Tensor], *, iters: int = 5, seed: int = 0
) -> float:
    """An estimate of L, the Lipschitz constant of x -> grad_x loss_i(x), along `points`.

    Each sample's loss must depend on its own input only (no batch statistics), so the Hessian
    of sum_i loss_i is block diagonal and one batched power iteration runs every sample's at
    once. At each point, `iters` Hessian-vector products (warm-started from the previous
    point's vectors) give ||H_i v_i|| with unit v_i; between consecutive points the gradient
    secant is measured too. Both are lower bounds of L (they approach it from below), and the
    result is their maximum: SMOOTHNESS_METHOD.
    """
    if not points or iters < 1:
        raise ValueError("loss_smoothness needs at least one point and iters >= 1")
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(points[0].shape, generator=gen).to(points[0])
    best, prev = 0.0, None
    for p in points:
        x = p.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(per_sample_loss(x).sum(), x, create_graph=True)
            for _ in range(iters if grad.requires_grad else 0):  # else: linear, H = 0
                v = v / _per_sample_norm(v).clamp_min(1e-30).view(-1, *[1] * (v.ndim - 1))
                (hv,) = torch.autograd.grad(grad, x, v, retain_graph=True)
                best = max(best, _per_sample_norm(hv).max().item())
                v = hv.detach()
        grad = grad.detach()
        if prev is not None:
            step = _per_sample_norm(p - prev[0])
            # a secant over a step near rounding level is noise: keep steps above sqrt(eps)
            floor = math.sqrt(torch.finfo(p.dtype).eps) * (1 + _per_sample_norm(p))
            moved = step > floor
            if moved.any():
                secant = _per_sample_norm(grad - prev[1])[moved] / step[moved]
                best = max(best, secant.max().item())
        prev = (p.detach(), grad)
    return best


@dataclass
class WRMCertificate:
    """Upper bounds on the worst-case loss over Wasserstein balls around the batch.

    For every rho: sup { E_P[loss] : W_c(P, P_batch) <= rho } <= gamma * rho + E[phi_gamma],
    with transport cost c(x, x0) = ||x - x0||^2 (so rho is in squared data units). The bound
    holds for any gamma > 0 provided phi_gamma is the true sup; `label` says whether the checks
    that make the found phi_gamma the sup passed ("certificate") or not ("estimate").
    """

    gamma: float
    clean_loss: float  # E[loss(x0)]
    robust_loss: float  # E[phi_gamma]
    adv_loss: float  # E[loss(x_adv)], the worst case WRM found
    transport_cost: float  # E||x_adv - x0||^2, the radius at which WRM found adv_loss
    rhos: list[float]
    bounds: list[float]  # gamma * rho + robust_loss, one per rho
    inner_grad_norm: float  # max over samples of ||grad_x inner objective|| at x_adv
    grad_tol: float
    converged: bool  # inner_grad_norm <= grad_tol
    smoothness: float  # L_hat, the estimated smoothness of the loss in x
    smoothness_method: str
    gamma_exceeds_smoothness: bool  # gamma > L_hat
    label: Literal["certificate", "estimate"]

    def bound(self, rho: float) -> float:
        """gamma * rho + E[phi_gamma]."""
        return self.gamma * rho + self.robust_loss

    def to_dict(self) -> dict:
        return asdict(self)


def wrm_certificate(
    per_sample_loss: PerSampleLoss,
    x0: Tensor,
    gamma: float,
    *,
    rhos: Sequence[float],
    steps: int = 15,
    step_size: float | None = None,
    grad_tol: float = 1e-3,
    smoothness_iters: int = 5,
) -> WRMCertificate:
    """gamma * rho + E[phi_gamma] for each radius rho, what WRM found, and the two checks."""
    if any(r < 0 for r in rhos):
        raise ValueError(f"radii must be >= 0, got {list(rhos)}")
    path = _ascent(
        per_sample_loss, x0, gamma=gamma, steps=steps, step_size=step_size, keep_path=True
    )
    x_adv = path[-1]
    grad_norm = _per_sample_norm(_inner_grad(per_sample_loss, x_adv, x0.detach(), gamma))
    smooth = loss_smoothness(per_sample_loss, path, iters=smoothness_iters)
    with torch.no_grad():
        clean = _check_loss(per_sample_loss(x0), len(x0)).mean().item()
        adv = per_sample_loss(x_adv).mean().item()
        cost = _sq_dist(x_adv, x0).mean().item()
    robust = adv - gamma * cost
    converged = grad_norm.max().item() <= grad_tol
    return WRMCertificate(
        gamma=float(gamma),
        clean_loss=clean,
        robust_loss=robust,
        adv_loss=adv,
        transport_cost=cost,
        rhos=[float(r) for r in rhos],
        bounds=[gamma * float(r) + robust for r in rhos],
        inner_grad_norm=grad_norm.max().item(),
        grad_tol=float(grad_tol),
        converged=converged,
        smoothness=smooth,
        smoothness_method=SMOOTHNESS_METHOD,
        gamma_exceeds_smoothness=gamma > smooth,
        label="certificate" if converged and gamma > smooth else "estimate",
    )


def classifier_per_sample_loss(model: nn.Module, labels: Tensor) -> PerSampleLoss:
    """Cross-entropy per input: WRM for classifiers perturbs the inputs."""
    return lambda x: F.cross_entropy(model(x), labels, reduction="none")


def diffusion_per_sample_loss(
    model: nn.Module, schedule: NoiseSchedule, *, t: Tensor, noise: Tensor
) -> PerSampleLoss:
    """Diffusion loss per clean sample at fixed (t, noise): WRM perturbs x0 before noising."""
    from flatgen.diffusion.loss import diffusion_loss

    return lambda x0: diffusion_loss(model, x0, schedule, t=t, noise=noise, reduction="none")
