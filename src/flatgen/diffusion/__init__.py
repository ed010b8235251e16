"""Diffusion: noise schedule, training loss (with input perturbation), samplers with T' steps."""

from flatgen.diffusion.generate import generate
from flatgen.diffusion.loss import diffusion_loss, draw_training_noise, fixed_diffusion_loss_fn
from flatgen.diffusion.samplers import (
    SAMPLER_RULES,
    SAMPLERS,
    Sampler,
    SamplerStep,
    register_sampler,
    sample,
)
from flatgen.diffusion.schedule import NoiseSchedule, as_epsilon_model, schedule_from_config

__all__ = [
    "NoiseSchedule",
    "SAMPLERS",
    "SAMPLER_RULES",
    "Sampler",
    "SamplerStep",
    "as_epsilon_model",
    "diffusion_loss",
    "draw_training_noise",
    "fixed_diffusion_loss_fn",
    "generate",
    "register_sampler",
    "sample",
    "schedule_from_config",
]
