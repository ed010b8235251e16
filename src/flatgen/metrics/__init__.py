"""Sample-quality metrics: exact and sliced W2 (POT), Frechet distance, KID, digits-FID, and
the robustness ladders' choice among them (ladder_quality)."""

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
from flatgen.metrics.inception import inception_weights_path
from flatgen.metrics.ladder_quality import CANNOT_RANK, LadderQuality, ladder_quality, metric_note
from flatgen.metrics.quality import (
    digits_fid,
    digits_kid,
    is_digits,
    is_rgb,
    quality_report,
    train_floor_sample,
)
from flatgen.metrics.wasserstein import sliced_wasserstein2, wasserstein2

__all__ = [
    "CANNOT_RANK",
    "DigitsClassifier",
    "digits_accuracy",
    "digits_features",
    "digits_fid",
    "digits_kid",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "LadderQuality",
    "is_digits",
    "inception_weights_path",
    "is_rgb",
    "kid",
    "ladder_quality",
    "load_digits_classifier",
    "metric_note",
    "quality_report",
    "sliced_wasserstein2",
    "train_floor_sample",
    "wasserstein2",
]
