"""Sample-quality metrics for generated data: digits-FID, digits-KID, W2, and their floors.

digits-FID is the Frechet distance in the features of flatgen's own small digits classifier
(metrics/digits_classifier.py). It is not comparable with Inception FID numbers in papers.

A finite-sample W2 (or FID) is biased upward by sample size, so each score comes with a
floor: the same metric between an equal-size draw of real TRAIN data and the same reference.
A model cannot be expected to score below its floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flatgen.metrics._arrays import ArrayLike
from flatgen.metrics.digits_classifier import (
    DIGITS_SHAPE,
    DigitsClassifier,
    digits_features,
    load_digits_classifier,
)
from flatgen.metrics.frechet import frechet_distance_from_features, kid
from flatgen.metrics.wasserstein import wasserstein2


def digits_fid(
    samples: ArrayLike, reference: ArrayLike, classifier: DigitsClassifier | None = None
) -> float:
    """digits-FID: Frechet distance between samples and reference in digits-classifier features."""
    model = classifier if classifier is not None else load_digits_classifier()
    return frechet_distance_from_features(
        digits_features(samples, model), digits_features(reference, model)
    )


def digits_kid(
    samples: ArrayLike,
    reference: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    classifier: DigitsClassifier | None = None,
) -> tuple[float, float]:
    """digits-KID (mean, std) between samples and reference in digits-classifier features."""
    model = classifier if classifier is not None else load_digits_classifier()
    return kid(
        digits_features(samples, model),
        digits_features(reference, model),
        subsets=subsets,
        subset_size=subset_size,
        seed=seed,
    )


def train_floor_sample(train: ArrayLike, n: int, seed: int = 0) -> ArrayLike:
    """Draw n distinct rows of train (without replacement), reproducibly from seed."""
    if not 1 <= n <= len(train):
        raise ValueError(
            f"floor sample size must be between 1 and the {len(train)} training samples, got {n}"
        )
    idx = np.sort(np.random.default_rng(seed).choice(len(train), n, replace=False))
    return train[torch.from_numpy(idx)] if isinstance(train, torch.Tensor) else train[idx]


def is_digits(x: ArrayLike) -> bool:
    """Whether x is a batch of 8x8 digits (N x 1 x 8 x 8)."""
    return tuple(x.shape[1:]) == DIGITS_SHAPE


def is_rgb(x: ArrayLike) -> bool:
    """Whether x is a batch of RGB images (N x 3 x H x W), what the FID Inception scores."""
    return len(x.shape) == 4 and x.shape[1] == 3


def quality_report(
    samples: ArrayLike,
    reference: ArrayLike,
    floor_reference: ArrayLike | None,
    *,
    digits: bool | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Quality of samples against a reference (usually the test split), with floors.

    floor_reference is real data from the TRAIN split with as many samples as samples (see
    train_floor_sample); each "*_floor" entry is the metric of floor_reference against the
    same reference. W2 is always reported; digits-FID and digits-KID only for 1x8x8 data
    (digits=None detects the shape; True demands it; False skips them).
    floor_reference=None skips the floors (when the caller already has them).
    """
    if floor_reference is None:
        floor_reference = samples[:0]
    elif len(floor_reference) != len(samples):
        raise ValueError(
            f"floor_reference has {len(floor_reference)} samples but samples has {len(samples)}: "
            "the floor must use the same number of samples, since W2 and FID depend on it"
        )
    shapes = {tuple(a.shape[1:]) for a in (samples, reference, floor_reference)}
    if len(shapes) != 1:
        raise ValueError(
            f"samples, reference and floor_reference differ in shape: {sorted(shapes)}"
        )
    if digits is None:
        digits = is_digits(samples)
    elif digits and not is_digits(samples):
        raise ValueError(f"digits metrics need N x 1 x 8 x 8 data, got {tuple(samples.shape)}")

    has_floor = len(floor_reference) > 0
    report: dict[str, Any] = {"n": len(samples), "n_reference": len(reference)}
    report["w2"] = wasserstein2(samples, reference)
    if has_floor:
        report["w2_floor"] = wasserstein2(floor_reference, reference)
    if digits:
        model = load_digits_classifier()
        f_ref = digits_features(reference, model)
        named = [("", samples)] + ([("_floor", floor_reference)] if has_floor else [])
        for suffix, x in named:
            f = digits_features(x, model)
            kid_mean, kid_std = kid(f, f_ref, subsets=kid_subsets, subset_size=kid_subset_size,
                                     seed=seed)
            report[f"digits_fid{suffix}"] = frechet_distance_from_features(f, f_ref)
            report[f"kid{suffix}"] = kid_mean
            report[f"kid{suffix}_std"] = kid_std
    return report
