"""Noise schedule: betas and cumulative alphas from diffusers' DDPMScheduler, forward noising,
and the conversions between what a network predicts (epsilon, v or x0) and the noise eps.

A schedule is built from flatgen's config (`NoiseSchedule("cosine", 1000)`) or read from a
diffusers scheduler config (`NoiseSchedule.from_scheduler_config(...)`), which refuses, in one
line, whatever flatgen's samplers would silently get wrong.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler

# flatgen name -> diffusers beta_schedule
SCHEDULE_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2",
                  "scaled_linear": "scaled_linear"}
DIFFUSERS_TO_KIND = {v: k for k, v in SCHEDULE_NAMES.items()}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# the posterior variance flatgen's ADM sampler uses ("fixed small"); log-space is the same value
SUPPORTED_VARIANCE = ("fixed_small", "fixed_small_log")
DEFAULT_BETA_START, DEFAULT_BETA_END = 0.0001, 0.02
# the sampling chain: a diffusers model's own scheduler ("pipeline": its timestep_spacing,
# steps_offset and DDIM's set_alpha_to_one), or flatgen's respaced chain (guided-diffusion's
# space_timesteps, diffusers' "linspace"), which flatgen's own runs use
CHAINS = ("pipeline", "respaced")
SPACINGS = ("leading", "linspace", "trailing")


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
        pipeline: Mapping[str, Any] | None = None,
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
        # the diffusers scheduler's chain settings (from_scheduler_config); None: flatgen's own
        self.pipeline = dict(pipeline) if pipeline is not None else None
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
            pipeline=_pipeline_chain(cfg, name),
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


    def chain(self, steps: int, *, ddim: bool, chain: str | None = None) -> list[tuple[int, int]]:
        """The sampler's (t, t_prev) pairs, t descending; t_prev = -1 steps to the data.

        chain None is the model's own: "pipeline" for a schedule read from a diffusers config,
        else "respaced". On "pipeline" the timesteps are diffusers' own set_timesteps(steps) of
        the scheduler the sampler stands for (DDPMScheduler for adm, DDIMScheduler for ddim),
        and t_prev is what its step() uses: the next chain entry for DDPM, t - T // steps for
        DDIM, whatever the spacing.
        """
        chain = chain or ("pipeline" if self.pipeline is not None else "respaced")
        if chain not in CHAINS:
            raise ValueError(f"unknown chain {chain!r}; choose from {', '.join(CHAINS)}")
        if chain == "respaced" or self.pipeline is None:
            ts = self.respaced(steps)[::-1]
            return list(zip(ts, [*ts[1:], -1], strict=True))
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sampling steps must be in 1..{self.timesteps}, got {steps}")
        sched = self.diffusers_scheduler(ddim=ddim)
        sched.set_timesteps(steps)
        ts = [int(t) for t in sched.timesteps]
        if ddim:
            return [(t, t - self.timesteps // steps) for t in ts]
        return list(zip(ts, [*ts[1:], -1], strict=True))

    def diffusers_scheduler(self, *, ddim: bool, clip: bool | None = None,
                            epsilon: bool = False) -> DDPMScheduler | DDIMScheduler:
        """The diffusers scheduler a pipeline model samples with: DDPMScheduler (adm) or
        DDIMScheduler (ddim, as DDIMPipeline converts any scheduler) from its own config;
        clip overrides clip_sample, epsilon=True reads eps outputs (ADM-ES scaled eps)."""
        if self.pipeline is None:
            raise ValueError("this schedule was not read from a diffusers scheduler config")
        kind = DDIMScheduler if ddim else DDPMScheduler
        accepted = set(inspect.signature(kind.__init__).parameters)
        cfg = {k: v for k, v in self.pipeline["config"].items() if k in accepted}
        if clip is not None:
            cfg["clip_sample"] = clip
        if epsilon:
            cfg["prediction_type"] = "epsilon"
        return kind(**cfg)

    def chain_name(self, sampler: str) -> str:
        """What quality.json and the report print: the chain a sampler ("adm", "ddim",
        "adm-respaced", "ddim-respaced") walks on this schedule."""
        if sampler.endswith("-respaced") or self.pipeline is None:
            return "flatgen respaced (linspace 0..T-1)"
        p = self.pipeline
        if sampler.startswith("ddim"):
            return (f"DDIMScheduler timestep_spacing={p['timestep_spacing']} "
                    f"steps_offset={p['steps_offset']} set_alpha_to_one="
                    f"{str(p['set_alpha_to_one']).lower()}")
        return (f"DDPMScheduler timestep_spacing={p['timestep_spacing']} "
                f"steps_offset={p['steps_offset']}")


def _pipeline_chain(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The chain settings of a diffusers scheduler config, with diffusers' defaults, checked."""
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in SPACINGS:
        raise ValueError(f"{name}: timestep_spacing {spacing!r} is not supported; flatgen reads "
                         f"{', '.join(SPACINGS)}")
    offset = cfg.get("steps_offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"{name}: steps_offset must be a non-negative integer, got {offset!r}")
    to_one = cfg.get("set_alpha_to_one", True)
    if not isinstance(to_one, bool):
        raise ValueError(f"{name}: set_alpha_to_one must be true or false, got {to_one!r}")
    return {"scheduler": name, "timestep_spacing": spacing, "steps_offset": offset,
            "set_alpha_to_one": to_one, "config": dict(cfg)}


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
