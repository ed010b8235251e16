"""Classifiers: sharpness versus adversarial vulnerability, with the standard defenses.

Train a small CNN with one method (plain, weight decay, dropout, SAM family, PGD adversarial
training, defensive distillation, spectral norm, WRM), measure clean and robust accuracy
(FGSM / PGD, L-inf / L2, inputs in [0, 1]) and the sharpness of its loss, and correlate the two
over methods x seeds: `run_classifier_study(cfg, out_dir)` (`flatgen study` with task: classifier).
"""

from flatgen.classify.config import ClassifierStudyConfig
from flatgen.classify.data import load_classifier_data, to_unit_box
from flatgen.classify.evaluate import (
    TemperatureScaled,
    accuracy,
    adversarial_examples,
    robust_accuracies,
    sharpness_measures,
)
from flatgen.classify.methods import distillation_loss, soft_labels
from flatgen.classify.models import (
    CLASSIFIER_PRESETS,
    SmallCNN,
    apply_spectral_norm,
    build_classifier,
    layer_spectral_norms,
)
from flatgen.classify.study import run_classifier_study
from flatgen.classify.train import TrainResult, train_classifier

__all__ = [
    "CLASSIFIER_PRESETS",
    "ClassifierStudyConfig",
    "SmallCNN",
    "TemperatureScaled",
    "TrainResult",
    "accuracy",
    "adversarial_examples",
    "apply_spectral_norm",
    "build_classifier",
    "distillation_loss",
    "layer_spectral_norms",
    "load_classifier_data",
    "robust_accuracies",
    "run_classifier_study",
    "sharpness_measures",
    "soft_labels",
    "to_unit_box",
    "train_classifier",
]
