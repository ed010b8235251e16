"""The Wasserstein DRO game for generators (Gao & Tembine 2018) and its baselines.

WRM, the training method, lives in flatgen.optim.wrm.
"""

from flatgen.dro.baselines import NSGAN, WGANGP, gradient_penalty, min_wasserstein
from flatgen.dro.config import DROExperimentConfig, GameConfig, OTConfig
from flatgen.dro.experiment import run_dro_experiment
from flatgen.dro.game import DROGame, defend
from flatgen.dro.nets import AutoEncoder, MLPCritic, MLPGenerator, train_autoencoder
from flatgen.dro.summary import w2_oscillation
from flatgen.dro.transport import (
    OTDistance,
    exact_w2,
    ot_cost,
    pairwise_sq_dists,
    per_sample_ot_cost,
    transport_plan,
)

__all__ = [
    "AutoEncoder",
    "DROExperimentConfig",
    "DROGame",
    "GameConfig",
    "MLPCritic",
    "MLPGenerator",
    "NSGAN",
    "OTConfig",
    "OTDistance",
    "WGANGP",
    "defend",
    "exact_w2",
    "gradient_penalty",
    "min_wasserstein",
    "ot_cost",
    "pairwise_sq_dists",
    "per_sample_ot_cost",
    "run_dro_experiment",
    "train_autoencoder",
    "transport_plan",
    "w2_oscillation",
]
