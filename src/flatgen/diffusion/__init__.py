"""Diffusion: noise schedule, training loss (with input perturbation), samplers with T' steps."""

from flatgen.diffusion.generate import generate
from flatgen.diffusion.loss import diffusion_loss, draw_training_noise, fixed_diffusion_loss_fn
from flatgen.diffusion.samplers import SAMPLERS, SamplerStep, sample
from flatgen.diffusion.schedule import NoiseSchedule

__all__ = [
    "NoiseSchedule",
    "SAMPLERS",
    "SamplerStep",
    "diffusion_loss",
    "draw_training_noise",
    "fixed_diffusion_loss_fn",
    "generate",
    "sample",
]
