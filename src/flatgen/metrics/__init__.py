"""Sample-quality metrics: exact and sliced W2 (POT), Frechet distance, KID, digits-FID."""

from flatgen.metrics.digits_classifier import (
    DigitsClassifier,
    digits_accuracy,
    digits_features,
    load_digits_classifier,
)
from flatgen.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kid,
)
from flatgen.metrics.quality import (
    digits_fid,
    digits_kid,
    is_digits,
    quality_report,
    train_floor_sample,
)
from flatgen.metrics.wasserstein import sliced_wasserstein2, wasserstein2

__all__ = [
    "DigitsClassifier",
    "digits_accuracy",
    "digits_features",
    "digits_fid",
    "digits_kid",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "is_digits",
    "kid",
    "load_digits_classifier",
    "quality_report",
    "sliced_wasserstein2",
    "train_floor_sample",
    "wasserstein2",
]
