"""The exposure gap the sampler alone causes: Gaussian data N(mu, Sigma) with its exact denoiser.

For such data the MMSE noise predictor is linear,
    eps*(x_t, t) = sqrt(1 - a) (a Sigma + (1 - a) I)^-1 (x_t - sqrt(a) mu),     a = abar_t,
and so is every step of the ADM and DDIM samplers built on it (without clipping). In the eigen
basis of Sigma = U diag(lam) U^T the pixels decouple: x_T ~ N(0, I) and the sampler's noise are
isotropic, so they stay N(0, I) after the rotation, and each eigen-direction i is the scalar
problem of data N(m_i, lam_i) with m = U^T mu. The sampler's x_t is then N(c_ti m_i, v_ti) per
direction, with scalars c, v carried through the chain in closed form, while a forward-noised
x_t is N(sqrt(a) m_i, a lam_i + 1 - a). The predicted noise is Gaussian in both cases and norms
do not see the rotation, so its mean squared norm is exact, and its mean unsquared norm is the
mean of a generalized chi (scipy.stats' chi / non-central chi-square where the variances are
equal, else one 1-D integral of the product of the per-direction Laplace transforms).
The difference at finite T' is the sampler's own error: a trained model's gap beyond it is what
the network adds.

The study evaluates this with the test set's mean and full covariance (data_covariance); the
isotropic stand-in N(mu, s^2 I) (data_moments) ignores the pixel correlations and overstates
the sampler's part on digits (issue 18: -0.034 against -0.011).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import integrate, stats
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.exposure import gap_report


class GaussianDenoiser(nn.Module):
    """The exact noise predictor for x0 ~ N(mu, s^2 I), or N(mu, cov) when `cov` (d x d over
    the flattened sample) is given; gain != 1 makes a miscalibrated one."""

    def __init__(
        self, schedule: NoiseSchedule, mu: torch.Tensor | float, s: float = 1.0, *,
        gain: float = 1.0, cov: torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.register_buffer("abar", schedule.alphas_cumprod.float())
        self.s, self.gain, self.full = float(s), float(gain), cov is not None
        if cov is not None:
            lam, vecs = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
            self.register_buffer("lam", lam.clamp_min(0).float())
            self.register_buffer("vecs", vecs.float())
        self.dummy = nn.Parameter(torch.zeros(()))  # samplers read device/dtype from here

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, *([1] * (x.ndim - 1)))
        centred = x - a.sqrt() * self.mu
        if not self.full:
            return self.gain * (1 - a).sqrt() * centred / (a * self.s**2 + 1 - a)
        a2 = a.flatten()[:, None]
        y = centred.flatten(1) @ self.vecs / (a2 * self.lam + 1 - a2)  # per eigen-direction
        return self.gain * (1 - a2).sqrt().view(-1, *([1] * (x.ndim - 1))) * (
            y @ self.vecs.T).view_as(x)


def _step(a: float, ap: float, s2: Any, sampler: str) -> tuple[Any, Any, Any]:
    """x_prev = p x_t + q mu + sqrt(var) z for the exact denoiser, without clipping (per
    eigen-direction: s2 may be an array of variances)."""
    k = math.sqrt(a) * s2 / (a * s2 + 1 - a)  # x0_hat = k x_t + (1 - k sqrt(a)) mu
    k_mu = 1 - k * math.sqrt(a)
    if sampler == "adm":
        beta = 1 - a / ap
        c0 = beta * math.sqrt(ap) / (1 - a)
        ct = (1 - ap) * math.sqrt(1 - beta) / (1 - a)
        return c0 * k + ct, c0 * k_mu, beta * (1 - ap) / (1 - a)
    # DDIM: x_prev = sqrt(ap) x0_hat + sqrt(1 - ap) eps_hat, eps_hat = (x - sqrt(a) x0_hat) / ...
    r = math.sqrt((1 - ap) / (1 - a))
    p = math.sqrt(ap) * k + r * (1 - math.sqrt(a) * k)
    q = math.sqrt(ap) * k_mu - r * math.sqrt(a) * k_mu
    return p, q, 0.0


def sampler_moments(
    schedule: NoiseSchedule, *, s: float | None = None, steps: int, sampler: str = "adm",
    variances: np.ndarray | None = None,
) -> dict[int, tuple[Any, Any]]:
    """t -> (c_t, v_t): the sampler's x_t ~ N(c_t mu, v_t I) at every respaced timestep it
    feeds to the denoiser, for data N(mu, s^2 I) and the exact denoiser (x_T ~ N(0, I)). With
    `variances` (the eigenvalues of Sigma), c_t and v_t are arrays, one per eigen-direction."""
    if sampler not in ("adm", "ddim"):
        raise ValueError(f"sampler must be adm or ddim, got {sampler!r}")
    if (s is None) == (variances is None):
        raise ValueError("give one of s and variances")
    s2 = s * s if variances is None else np.asarray(variances, dtype=np.float64)
    ab = schedule.alphas_cumprod.double().numpy()
    ts = schedule.respaced(steps)
    c, v = 0.0 * s2, 1.0 + 0.0 * s2
    out = {}
    for j in range(len(ts) - 1, -1, -1):
        out[ts[j]] = (c, v)
        if j > 0:
            p, q, var = _step(float(ab[ts[j]]), float(ab[ts[j - 1]]), s2, sampler)
            c, v = p * c + q, p * p * v + var
    return out


def _mean_norm(scale: float, d: int, nc: float) -> float:
    """E||N(m, scale^2 I_d)|| with ||m||^2 = nc * scale^2: scale times a (non-central) chi mean."""
    if nc <= 1e-12:
        return scale * float(stats.chi(d).mean())
    return scale * float(stats.ncx2(d, nc).expect(np.sqrt))


def mean_norm(mean: np.ndarray, var: np.ndarray) -> float:
    """E||z|| for z ~ N(mean, diag(var)). Equal variances: the (non-central) chi mean. Else
    E sqrt(Q) = 1 / (2 sqrt(pi)) * integral over s > 0 of (1 - E exp(-s Q)) s^(-3/2) ds (from
    sqrt(q) = the same integral of 1 - exp(-s q)), with the Laplace transform of
    Q = sum_i z_i^2 a product over i: (1 + 2 s var_i)^(-1/2) exp(-s mean_i^2 / (1 + 2 s var_i)).
    Integrated over u = log s, around the scale s ~ 1 / E Q, by adaptive quadrature."""
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    if np.allclose(var, var[0], rtol=1e-12, atol=0):
        return _mean_norm(math.sqrt(var[0]), len(var), float((mean**2).sum() / var[0]))
    m2 = mean**2

    def integrand(u: float) -> float:
        s = math.exp(u)
        log_laplace = float(np.sum(-0.5 * np.log1p(2 * s * var) - s * m2 / (1 + 2 * s * var)))
        return -math.expm1(log_laplace) * math.exp(-u / 2)

    u0 = -math.log(float(var.sum() + m2.sum()))
    value, _ = integrate.quad(integrand, u0 - 60, u0 + 60, points=[u0], limit=400,
                              epsabs=0, epsrel=1e-10)
    return value / (2 * math.sqrt(math.pi))


def sampler_only_gap(
    schedule: NoiseSchedule, *, mu: torch.Tensor, s: float | None = None,
    cov: torch.Tensor | np.ndarray | None = None, steps: int, sampler: str = "adm",
) -> dict[str, Any]:
    """The exposure gap of the exact denoiser for data N(mu, cov) (or N(mu, s^2 I)), exact.

    Same layout as the measured gap: {"steps", "sampler", "mu_norm", "s" (the root of the mean
    variance), "covariance" ("full" | "isotropic"), "l2": gap_report, "sq": gap_report} (mean
    eps norm per sampled timestep, sampling vs training inputs, ascending t).
    """
    mu = torch.as_tensor(mu, dtype=torch.float64).flatten().numpy()
    d = mu.size
    if cov is not None:  # diagonalize Sigma: each eigen-direction is its own scalar Gaussian
        lam, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64).reshape(d, d))
        lam, m = np.clip(lam, 0.0, None), vecs.T @ mu
    elif s is not None:
        lam, m = np.full(d, float(s) ** 2), mu
    else:
        raise ValueError("give s (isotropic) or cov (full covariance)")
    ab = schedule.alphas_cumprod.double().numpy()
    train: dict[str, dict[int, float]] = {"l2": {}, "sq": {}}
    samp: dict[str, dict[int, float]] = {"l2": {}, "sq": {}}
    moments = sampler_moments(schedule, variances=lam, steps=steps, sampler=sampler)
    for t, (c, v) in moments.items():
        a = float(ab[t])
        e = math.sqrt(1 - a) / (a * lam + 1 - a)  # eps*_i = e_i (y_i - sqrt(a) m_i)
        var_train, var_samp = e * e * (a * lam + 1 - a), e * e * v
        mean_samp = e * (c - math.sqrt(a)) * m  # E eps* under sampling, per direction
        train["sq"][t] = float(var_train.sum())
        samp["sq"][t] = float(var_samp.sum() + (mean_samp**2).sum())
        train["l2"][t] = mean_norm(np.zeros(d), var_train)
        samp["l2"][t] = mean_norm(mean_samp, var_samp)
    return {
        "steps": steps,
        "sampler": sampler,
        "mu_norm": float(np.linalg.norm(mu)),
        "s": float(math.sqrt(lam.mean())),
        "covariance": "isotropic" if cov is None else "full",
        "l2": gap_report(samp["l2"], train["l2"]),
        "sq": gap_report(samp["sq"], train["sq"]),
    }


def data_covariance(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pixel mean, full covariance over the flattened pixels, unbiased) of a data set: the
    Gaussian N(mu, Sigma) that sampler_only_gap stands the data in with."""
    flat = x0.detach().double().flatten(1)
    return flat.mean(0).view(x0.shape[1:]), torch.cov(flat.T).reshape(flat.shape[1], -1)


def data_moments(x0: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(per-pixel mean, sqrt of the mean per-pixel variance) of a data set: the Gaussian
    N(mu, s^2 I) that sampler_only_gap stands the data in with."""
    flat = x0.detach().double().flatten(1)
    return flat.mean(0).view(x0.shape[1:]), float(flat.var(0, unbiased=True).mean().sqrt())
