"""Noise schedule: betas and cumulative alphas from diffusers' DDPMScheduler, forward noising,
and the conversions between what a network predicts (epsilon, v or x0) and the noise eps.

A schedule is built from flatgen's config (`NoiseSchedule("cosine", 1000)`) or read from a
diffusers scheduler config (`NoiseSchedule.from_scheduler_config(...)`), which refuses, in one
line, whatever flatgen's samplers would silently get wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import DDPMScheduler

# flatgen name -> diffusers beta_schedule
SCHEDULE_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2",
                  "scaled_linear": "scaled_linear"}
DIFFUSERS_TO_KIND = {v: k for k, v in SCHEDULE_NAMES.items()}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# the posterior variance flatgen's ADM sampler uses ("fixed small"); log-space is the same value
SUPPORTED_VARIANCE = ("fixed_small", "fixed_small_log")
DEFAULT_BETA_START, DEFAULT_BETA_END = 0.0001, 0.02


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


class NoiseSchedule:
    """Discrete-time DDPM schedule with T steps (t = 0 .. T-1).

    `alphas_cumprod[t]` is abar_t; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. The network's
    output is eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, or x0, as `prediction_type` says.
    `clip_sample` None clips predicted x0 to [-1, 1] for images only (flatgen's own runs).
    """

    def __init__(
        self,
        kind: str = "linear",
        timesteps: int = 1000,
        *,
        beta_start: float = DEFAULT_BETA_START,
        beta_end: float = DEFAULT_BETA_END,
        prediction_type: str = "epsilon",
        clip_sample: bool | None = None,
    ):
        kind = DIFFUSERS_TO_KIND.get(kind, kind)  # accept diffusers' name for the cosine schedule
        if kind not in SCHEDULE_NAMES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULE_NAMES)}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; "
                             f"choose from {', '.join(PREDICTION_TYPES)}")
        self.kind = kind
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.scheduler = DDPMScheduler(
            num_train_timesteps=timesteps,
            beta_schedule=SCHEDULE_NAMES[kind],
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            prediction_type=prediction_type,
            clip_sample=True if clip_sample is None else clip_sample,
            # diffusers' DDPMPipeline walks the same respaced chain as flatgen's ADM sampler
            # only with "linspace" (its default "leading" starts at T - T/N, not T - 1)
            timestep_spacing="linspace",
        )
        self.timesteps = timesteps
        # float64 for the sampler's coefficient arithmetic; cast at use
        self.betas = self.scheduler.betas.double()
        self.alphas_cumprod = self.scheduler.alphas_cumprod.double()

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """The schedule of a diffusers scheduler config (scheduler_config.json), or ValueError."""
        cfg = dict(config)
        name = cfg.get("_class_name", "scheduler")
        beta = cfg.get("beta_schedule", "linear")
        if beta not in DIFFUSERS_TO_KIND:
            raise ValueError(f"{name}: beta_schedule {beta!r} is not supported; flatgen reads "
                             f"{', '.join(DIFFUSERS_TO_KIND)}")
        refusals = [
            (cfg.get("trained_betas") is not None, "trained_betas (explicit betas)"),
            (bool(cfg.get("rescale_betas_zero_snr")), "rescale_betas_zero_snr=true"),
            (bool(cfg.get("thresholding")), "thresholding=true (dynamic thresholding)"),
            (cfg.get("variance_type", "fixed_small") not in SUPPORTED_VARIANCE,
             f"variance_type {cfg.get('variance_type')!r} (flatgen samples with fixed_small)"),
            (bool(cfg.get("clip_sample", True)) and float(cfg.get("clip_sample_range", 1.0)) != 1,
             f"clip_sample_range {cfg.get('clip_sample_range')} (flatgen clips to [-1, 1])"),
        ]
        for bad, what in refusals:
            if bad:
                raise ValueError(f"{name}: {what} is not supported by flatgen's samplers")
        prediction = cfg.get("prediction_type", "epsilon")
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"{name}: prediction_type {prediction!r} is not supported; flatgen "
                             f"reads {', '.join(PREDICTION_TYPES)}")
        return cls(
            DIFFUSERS_TO_KIND[beta], int(cfg.get("num_train_timesteps", 1000)),
            beta_start=float(cfg.get("beta_start", DEFAULT_BETA_START)),
            beta_end=float(cfg.get("beta_end", DEFAULT_BETA_END)),
            prediction_type=prediction, clip_sample=bool(cfg.get("clip_sample", True)),
        )

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t for integer timesteps t (one per sample)."""
        abar = _bcast(self.alphas_cumprod.to(x0.device)[t], x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at (x0, noise, t), per prediction_type."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        abar = _bcast(self.alphas_cumprod.to(x0.device)[t], x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def eps_from_output(self, out: torch.Tensor, x_t: torch.Tensor,
                        t: torch.Tensor) -> torch.Tensor:
        """The noise eps implied by the network's output at (x_t, t)."""
        if self.prediction_type == "epsilon":
            return out
        abar = _bcast(self.alphas_cumprod.to(x_t.device)[t], x_t)
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * out + (1 - abar).sqrt() * x_t
        return (x_t - abar.sqrt() * out) / (1 - abar).sqrt()

    def scheduler_config(self) -> dict[str, Any]:
        """A diffusers DDPMScheduler config reproducing this schedule (what `export` writes)."""
        return dict(self.scheduler.config)

    def respaced(self, steps: int) -> list[int]:
        """`steps` evenly spaced timesteps from 0 to T-1, ascending (guided-diffusion's
        space_timesteps; diffusers' timestep_spacing "linspace")."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.timesteps}, got {steps}")
        if steps == 1:
            return [self.timesteps - 1]
        stride = (self.timesteps - 1) / (steps - 1)
        return sorted({round(i * stride) for i in range(steps)})


def schedule_from_config(cfg: Any) -> NoiseSchedule:
    """The schedule of a config's `diffusion` section (flatgen.config.DiffusionConfig)."""
    return NoiseSchedule(cfg.schedule, cfg.timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, prediction_type=cfg.prediction_type)


class EpsilonModel(torch.nn.Module):
    """A v- or x0-predicting denoiser seen as an eps-predictor (for code that reads eps)."""

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.model = model
        self.schedule = schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.eps_from_output(self.model(x, t), x, t)


def as_epsilon_model(model: torch.nn.Module, schedule: NoiseSchedule) -> torch.nn.Module:
    """The model itself when it predicts eps, else an EpsilonModel wrapping it."""
    return model if schedule.prediction_type == "epsilon" else EpsilonModel(model, schedule)
