"""Robustness of diffusion models: sampling steps and exposure bias, weight quantization,
adversarial attacks (and a PGD/FGSM core shared with classifiers), weight noise."""

from flatgen.robustness.attacks import (
    attack_denoiser_input,
    attack_initial_noise,
    classifier_robust_accuracy,
    fgsm,
    ladder_record,
    pgd,
    robust_level,
)
from flatgen.robustness.chain import ddim_generate, denoise_chain
from flatgen.robustness.exposure import (
    EpsNormRecorder,
    epsilon_norm_gap,
    training_eps_norms,
    variance_error,
)
from flatgen.robustness.plots import plot_robustness
from flatgen.robustness.quantize import (
    calibration_inputs,
    fake_quantize_symmetric,
    model_size_bytes,
    quantization_sweep,
    quantize_activations,
    quantize_weights,
)
from flatgen.robustness.steps import generate, steps_sweep
from flatgen.robustness.suite import SUITES, RobustnessSettings, run_robustness_suite, summarize
from flatgen.robustness.weight_noise import (
    filter_normalized_direction,
    perturb_weights,
    weight_noise_sweep,
)

__all__ = [
    "SUITES",
    "EpsNormRecorder",
    "RobustnessSettings",
    "attack_denoiser_input",
    "attack_initial_noise",
    "calibration_inputs",
    "classifier_robust_accuracy",
    "ddim_generate",
    "denoise_chain",
    "epsilon_norm_gap",
    "fake_quantize_symmetric",
    "fgsm",
    "filter_normalized_direction",
    "generate",
    "ladder_record",
    "model_size_bytes",
    "perturb_weights",
    "pgd",
    "plot_robustness",
    "quantization_sweep",
    "quantize_activations",
    "quantize_weights",
    "robust_level",
    "run_robustness_suite",
    "steps_sweep",
    "summarize",
    "training_eps_norms",
    "variance_error",
    "weight_noise_sweep",
]
