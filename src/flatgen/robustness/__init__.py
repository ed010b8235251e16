"""Robustness of diffusion models: sampling steps and exposure bias, weight quantization,
adversarial attacks (and a PGD/FGSM core shared with classifiers), weight noise.

The names below load on first use (PEP 562), so that importing one light module such as
flatgen.robustness.settings does not pull in the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

# the function pgd shares its name with the module flatgen.robustness.pgd: bound now, so that
# importing the module later (attacks does) cannot leave the module in its place
from flatgen.robustness.pgd import pgd  # noqa: F401 - exported through __all__

_EXPORTS = {
    "attacks": ("attack_denoiser_input", "attack_initial_noise", "attack_initial_noise_ladders",
                "classifier_robust_accuracy", "fgsm", "ladder_record", "robust_level"),
    "chain": ("ddim_generate", "denoise_chain"),
    "exposure": ("EpsNormRecorder", "epsilon_norm_gap", "training_eps_norms", "variance_error"),
    "gaussian": ("GaussianDenoiser", "sampler_only_gap"),
    "quantize": ("calibration_inputs", "fake_quantize_symmetric", "model_size_bytes",
                 "quantize_activations", "quantize_weights"),
    "settings": ("RobustnessSettings",),
    "steps": ("generate",),
    "suite": ("plot_robustness", "run_robustness_suite", "summarize"),
    "suites": ("SUITES", "Suite", "SuiteContext", "SuiteSummary", "register_suite"),
    "weight_noise": ("filter_normalized_direction", "perturb_weights", "weight_noise_sweep"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted({*_WHERE, "pgd"})


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'flatgen.robustness' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flatgen.robustness.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
