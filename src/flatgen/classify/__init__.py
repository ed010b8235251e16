"""Classifiers: sharpness versus adversarial vulnerability, with the standard defenses.

Train a small CNN with one method (plain, weight decay, dropout, SAM family, PGD adversarial
training, defensive distillation, spectral norm, WRM), measure clean and robust accuracy
(FGSM / PGD, L-inf / L2, inputs in [0, 1]) and the sharpness of its loss, and correlate the two
over methods x seeds. The study itself runs through flatgen's one study engine (`flatgen study`
with task: classifier; flatgen.study.collect.run_classifier_study in Python).

Names are imported lazily, so that the study config (flatgen.classify.config) loads fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassifierStudyConfig": "config",
    "load_classifier_data": "data",
    "to_unit_box": "data",
    "TemperatureScaled": "evaluate",
    "accuracy": "evaluate",
    "adversarial_examples": "evaluate",
    "robust_accuracies": "evaluate",
    "sharpness_measures": "evaluate",
    "distillation_loss": "methods",
    "soft_labels": "methods",
    "CLASSIFIER_PRESETS": "models",
    "SmallCNN": "models",
    "apply_spectral_norm": "models",
    "build_classifier": "models",
    "layer_spectral_norms": "models",
    "TrainResult": "train",
    "train_classifier": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flatgen.classify' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flatgen.classify.{_EXPORTS[name]}"), name)
