"""Wasserstein distributionally robust training: WRM, and the DRO game for generators."""

from flatgen.dro.baselines import WGANGP, gradient_penalty, min_wasserstein
from flatgen.dro.config import (
    DROExperimentConfig,
    GameConfig,
    OTConfig,
    WRMConfig,
)
from flatgen.dro.experiment import run_dro_experiment
from flatgen.dro.game import DROGame, defend
from flatgen.dro.nets import AutoEncoder, MLPCritic, MLPGenerator, train_autoencoder
from flatgen.dro.transport import (
    OTDistance,
    exact_w2,
    ot_cost,
    pairwise_sq_dists,
    per_sample_ot_cost,
    transport_plan,
)
from flatgen.dro.wrm import (
    WRMCertificate,
    classifier_per_sample_loss,
    diffusion_per_sample_loss,
    robust_objective,
    wrm_certificate,
    wrm_loss,
    wrm_perturb,
)

__all__ = [
    "AutoEncoder",
    "DROExperimentConfig",
    "DROGame",
    "GameConfig",
    "MLPCritic",
    "MLPGenerator",
    "OTConfig",
    "OTDistance",
    "WGANGP",
    "WRMCertificate",
    "WRMConfig",
    "classifier_per_sample_loss",
    "defend",
    "diffusion_per_sample_loss",
    "exact_w2",
    "gradient_penalty",
    "min_wasserstein",
    "ot_cost",
    "pairwise_sq_dists",
    "per_sample_ot_cost",
    "robust_objective",
    "run_dro_experiment",
    "train_autoencoder",
    "transport_plan",
    "wrm_certificate",
    "wrm_loss",
    "wrm_perturb",
]
