"""The sampler-only exposure gap with the data's full covariance: exact per eigen-direction,
against a Monte Carlo of the same sampler with the exact Gaussian denoiser, and the mean norm of
a Gaussian with unequal variances against independent integrals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness import (
    GaussianDenoiser,
    RobustnessSettings,
    run_robustness_suite,
    sampler_only_gap,
)
from flatgen.robustness.gaussian import data_covariance, mean_norm

SCHEDULE = NoiseSchedule("linear", 1000)
pytestmark = pytest.mark.usefixtures("one_thread")


def _rotated_gaussian(d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.tensor([0.005, 0.02, 0.05, 0.2, 0.5, 1.0], dtype=torch.float64)[:d]
    mu = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
    return mu, q @ torch.diag(lam) @ q.T, q, lam


def test_full_covariance_gap_matches_a_monte_carlo_of_the_sampler() -> None:
    # Gaussian data with a strongly non-diagonal covariance, sampled by DDIM (T'=10) with the
    # exact denoiser (its own code: a solve in Sigma's eigen basis), against the closed form.
    # Monte Carlo error: ||eps|| has relative sd ~0.3 per sample in d = 6 (~0.58 for ||eps||^2),
    # so each mean over n = 20000 is good to 0.002 (0.004), the relative gap (sampling and
    # training estimates) to about 0.003 (0.006) per timestep, less in the mean over t.
    # Tolerances 0.005 (l2) and 0.008 (sq); the isotropic and diagonal stand-ins miss by
    # 0.013-0.026 here, so the test tells them apart.
    mu, cov, q, lam = _rotated_gaussian()
    n = 20000
    g = torch.Generator().manual_seed(1)
    x0 = (mu + torch.randn(n, 6, generator=g, dtype=torch.float64) @ (q * lam.sqrt()).T).float()
    settings = RobustnessSettings(n_samples=n, batch_size=n, exposure_steps=[10],
                                  variance_hops=[], exposure_sampler="ddim")
    res = run_robustness_suite(
        {"exact": GaussianDenoiser(SCHEDULE, mu.float(), cov=cov)}, SCHEDULE, x0,
        floor_reference=x0, suites=["exposure"], settings=settings, quality_fn=lambda x: 0.0,
        progress=False,
    )["exposure"]["exact"]
    full = sampler_only_gap(SCHEDULE, mu=mu, cov=cov, steps=10, sampler="ddim")
    iso = sampler_only_gap(SCHEDULE, mu=mu, s=float(lam.mean().sqrt()), steps=10,
                           sampler="ddim")
    diag = sampler_only_gap(SCHEDULE, mu=mu, cov=torch.diag(cov.diagonal()), steps=10,
                            sampler="ddim")
    assert full["covariance"] == "full" and iso["covariance"] == "isotropic"
    for form, tol in (("l2", 0.005), ("sq", 0.008)):
        measured = res["eps_norm_gap"]["10"][form]
        assert measured["t"] == full[form]["t"]
        np.testing.assert_allclose(measured["relative_gap"], full[form]["relative_gap"],
                                   atol=3 * tol)
        truth = full[form]["relative_gap_mean"]
        assert measured["relative_gap_mean"] == pytest.approx(truth, abs=tol)
        # the suite's own closed form, from the test set's sample covariance, agrees
        assert res["sampler_only"]["10"][form]["relative_gap_mean"] == pytest.approx(
            truth, abs=tol)
        for stand_in in (iso, diag):  # would fail the check above
            assert abs(stand_in[form]["relative_gap_mean"]
                       - measured["relative_gap_mean"]) > tol


def test_the_gap_sees_only_the_eigenvalues_and_the_mean_in_the_eigen_basis() -> None:
    mu, cov, q, lam = _rotated_gaussian()
    for sampler in ("adm", "ddim"):
        rotated = sampler_only_gap(SCHEDULE, mu=mu, cov=cov, steps=8, sampler=sampler)
        aligned = sampler_only_gap(SCHEDULE, mu=q.T @ mu, cov=torch.diag(lam), steps=8,
                                   sampler=sampler)
        for form in ("l2", "sq"):
            np.testing.assert_allclose(rotated[form]["sampling"], aligned[form]["sampling"],
                                       rtol=1e-8)
    # Sigma = s^2 I: the full-covariance path is the isotropic closed form
    s = 0.4
    iso = sampler_only_gap(SCHEDULE, mu=mu, s=s, steps=8)
    full = sampler_only_gap(SCHEDULE, mu=mu, cov=s * s * torch.eye(6), steps=8)
    for form in ("l2", "sq"):
        np.testing.assert_allclose(full[form]["relative_gap"], iso[form]["relative_gap"],
                                   rtol=1e-6, atol=1e-9)


def test_mean_norm_of_a_gaussian_with_unequal_variances() -> None:
    # nearly equal variances go through the integral: they must give the non-central chi mean
    var = 0.3 * (1 + 1e-9 * np.arange(5))
    mean = np.array([0.2, -0.1, 0.4, 0.0, 0.3])
    chi = math.sqrt(0.3) * stats.ncx2(5, (mean**2).sum() / 0.3).expect(np.sqrt)
    assert mean_norm(mean, var) == pytest.approx(chi, rel=1e-6)
    # two dimensions, very unequal: against a direct double integral of |z| times the density,
    # in polar coordinates (r^2 p(r, theta): smooth, no kink at the origin)
    var2, mean2 = np.array([0.05, 2.0]), np.array([0.7, -0.4])
    sd = np.sqrt(var2)

    (m0, m1), (s0, s1) = mean2.tolist(), sd.tolist()

    def f(r: float, theta: float) -> float:
        x, y = r * math.cos(theta), r * math.sin(theta)
        log_p = -0.5 * (((x - m0) / s0) ** 2 + ((y - m1) / s1) ** 2)
        return r * r * math.exp(log_p) / (2 * math.pi * s0 * s1)

    direct, _ = integrate.dblquad(f, 0, 2 * math.pi, 0, 12.0, epsabs=1e-9, epsrel=1e-8)
    assert mean_norm(mean2, var2) == pytest.approx(direct, rel=1e-6)


def test_data_covariance_is_the_sample_covariance() -> None:
    x = torch.randn(50, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    mu, cov = data_covariance(x)
    flat = x.double().flatten(1).numpy()
    np.testing.assert_allclose(mu.flatten().numpy(), flat.mean(0))
    np.testing.assert_allclose(cov.numpy(), np.cov(flat.T), rtol=1e-10)
