"""Frechet distance between Gaussian fits of features, and the kernel inception distance (KID)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from flatgen.metrics._arrays import ArrayLike, as_matrix, as_pair


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and the (unbiased) covariance of N x D features."""
    f = as_matrix(features, "features")
    if len(f) < 2:
        raise ValueError("need at least 2 feature vectors to estimate a covariance")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(
    gaussian1: tuple[np.ndarray, np.ndarray], gaussian2: tuple[np.ndarray, np.ndarray], *,
    eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), each given as (mean, cov)
    (what feature_statistics returns).

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), computed as in
    pytorch-fid (the squared distance is returned, as FID reports it).
    """
    (mu1, sigma1), (mu2, sigma2) = gaussian1, gaussian2
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1),) * 2:
        raise ValueError(
            f"inconsistent shapes: mu {mu1.shape}, {mu2.shape}; "
            f"sigma {sigma1.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on singular products; the result is checked below instead.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # Shift both covariances by eps * I, as pytorch-fid does.
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding gives a small imaginary part; a large one means the inputs are not PSD.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))  # rounding can leave a tiny negative for identical stats


def frechet_distance_from_features(f1: ArrayLike, f2: ArrayLike) -> float:
    """Frechet distance between Gaussian fits of two feature sets (N x D, M x D)."""
    f1m, f2m = as_pair(f1, f2)
    return frechet_distance(feature_statistics(f1m), feature_statistics(f2m))


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a @ b.T / a.shape[1] + 1.0
    return k * k * k  # (a.b / d + 1)^3; much faster than k ** 3


def _mmd2_poly_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 on two equal-size sets."""
    m = len(x)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kid(
    f1: ArrayLike, f2: ArrayLike, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel inception distance between feature sets: (mean, std) of unbiased MMD^2 over subsets.

    Follows Binkowski et al. 2018 / torch-fidelity (cubic polynomial kernel, subsets drawn
    without replacement). subset_size is capped at the smaller set's size; the estimate is
    unbiased at any size, only its spread grows. It can be slightly negative. The std is the
    spread over subsets, so it is 0 when subsets are the whole of both sets.
    """
    f1m, f2m = as_pair(f1, f2)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(subset_size, len(f1m), len(f2m))
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 samples, got {m}")
    if m == len(f1m) == len(f2m):
        # Every subset is the whole of both sets and MMD^2 ignores order: one value, std 0.
        return _mmd2_poly_unbiased(f1m, f2m), 0.0
    rng = np.random.default_rng(seed)
    # Many small matmuls: threaded BLAS only adds overhead here (10-25x slower on busy cores).
    with threadpool_limits(limits=1, user_api="blas"):
        values = np.array(
            [
                _mmd2_poly_unbiased(
                    f1m[rng.choice(len(f1m), m, replace=False)],
                    f2m[rng.choice(len(f2m), m, replace=False)],
                )
                for _ in range(subsets)
            ]
        )
    return float(values.mean()), float(values.std())
