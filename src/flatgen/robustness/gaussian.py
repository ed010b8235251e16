"""The exposure gap the sampler alone causes: Gaussian data N(mu, s^2 I) with its exact denoiser.

For such data the MMSE noise predictor is linear,
    eps*(x_t, t) = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a),     a = abar_t,
and so is every step of the ADM and DDIM samplers built on it (without clipping). Starting from
x_T ~ N(0, I), the sampler's x_t is then N(c_t mu, v_t I) with scalars c_t, v_t carried through
the chain in closed form, while a forward-noised x_t is N(sqrt(a) mu, (a s^2 + 1 - a) I). The
predicted noise is Gaussian in both cases, so its mean squared norm is exact, and its mean
unsquared norm is a (non-central) chi mean from scipy.stats. The difference at finite T' is the
sampler's own error: a trained model's gap beyond it is what the network adds.

The study evaluates this with the data's per-pixel mean as mu and the mean per-pixel variance
as s^2 (the Gaussian with the data's first two moments, up to pixel correlations).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.exposure import gap_report


class GaussianDenoiser(nn.Module):
    """The exact noise predictor for x0 ~ N(mu, s^2 I); gain != 1 makes a miscalibrated one."""

    def __init__(
        self, schedule: NoiseSchedule, mu: torch.Tensor | float, s: float, *, gain: float = 1.0
    ):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.register_buffer("abar", schedule.alphas_cumprod.float())
        self.s, self.gain = float(s), float(gain)
        self.dummy = nn.Parameter(torch.zeros(()))  # samplers read device/dtype from here

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, *([1] * (x.ndim - 1)))
        return self.gain * (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


def _step(a: float, ap: float, s2: float, sampler: str) -> tuple[float, float, float]:
    """x_prev = p x_t + q mu + sqrt(var) z for the exact denoiser, without clipping."""
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
    schedule: NoiseSchedule, *, s: float, steps: int, sampler: str = "adm"
) -> dict[int, tuple[float, float]]:
    """t -> (c_t, v_t): the sampler's x_t ~ N(c_t mu, v_t I) at every respaced timestep it
    feeds to the denoiser, for data N(mu, s^2 I) and the exact denoiser (x_T ~ N(0, I))."""
    if sampler not in ("adm", "ddim"):
        raise ValueError(f"sampler must be adm or ddim, got {sampler!r}")
    ab = schedule.alphas_cumprod.double().numpy()
    ts = schedule.respaced(steps)
    c, v, out = 0.0, 1.0, {}
    for j in range(len(ts) - 1, -1, -1):
        out[ts[j]] = (c, v)
        if j > 0:
            p, q, var = _step(float(ab[ts[j]]), float(ab[ts[j - 1]]), s * s, sampler)
            c, v = p * c + q, p * p * v + var
    return out


def _mean_norm(scale: float, d: int, nc: float) -> float:
    """E||N(m, scale^2 I_d)|| with ||m||^2 = nc * scale^2: scale times a (non-central) chi mean."""
    if nc <= 1e-12:
        return scale * float(stats.chi(d).mean())
    return scale * float(stats.ncx2(d, nc).expect(np.sqrt))


def sampler_only_gap(
    schedule: NoiseSchedule, *, mu: torch.Tensor, s: float, steps: int, sampler: str = "adm"
) -> dict[str, Any]:
    """The exposure gap of the exact denoiser for data N(mu, s^2 I), in closed form.

    Same layout as the measured gap: {"mu_norm", "s", "l2": gap_report, "sq": gap_report}
    (mean eps norm per sampled timestep, sampling vs training inputs, ascending t).
    """
    mu = torch.as_tensor(mu, dtype=torch.float64).flatten()
    d, mu_sq = mu.numel(), float(mu.pow(2).sum())
    ab = schedule.alphas_cumprod.double().numpy()
    s2 = s * s
    train: dict[str, dict[int, float]] = {"l2": {}, "sq": {}}
    samp: dict[str, dict[int, float]] = {"l2": {}, "sq": {}}
    for t, (c, v) in sampler_moments(schedule, s=s, steps=steps, sampler=sampler).items():
        a = float(ab[t])
        e = math.sqrt(1 - a) / (a * s2 + 1 - a)  # eps* = e (x_t - sqrt(a) mu)
        var_train, var_samp = e * e * (a * s2 + 1 - a), e * e * v
        mean_sq = e * e * (c - math.sqrt(a)) ** 2 * mu_sq  # ||E eps*||^2 under sampling
        train["sq"][t] = d * var_train
        samp["sq"][t] = d * var_samp + mean_sq
        train["l2"][t] = _mean_norm(math.sqrt(var_train), d, 0.0)
        samp["l2"][t] = _mean_norm(math.sqrt(var_samp), d, mean_sq / var_samp)
    return {
        "steps": steps,
        "sampler": sampler,
        "mu_norm": math.sqrt(mu_sq),
        "s": s,
        "l2": gap_report(samp["l2"], train["l2"]),
        "sq": gap_report(samp["sq"], train["sq"]),
    }


def data_moments(x0: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(per-pixel mean, sqrt of the mean per-pixel variance) of a data set: the Gaussian
    N(mu, s^2 I) that sampler_only_gap stands the data in with."""
    flat = x0.detach().double().flatten(1)
    return flat.mean(0).view(x0.shape[1:]), float(flat.var(0, unbiased=True).mean().sqrt())
