"""One-call analyses on (model, schedule, data), without a run directory.

- model: any torch module whose forward(x, t) returns a tensor or a diffusers output with
  `.sample` (a raw diffusers UNet2DModel works), predicting eps, v or x0 as the schedule says;
- schedule: a flatgen NoiseSchedule, a diffusers scheduler, or its config dict (read by
  NoiseSchedule.from_scheduler_config, so the model is sampled on that scheduler's own chain);
- data: real images in [-1, 1], a tensor (N, C, H, W) split here into two halves (the train
  half feeds the fixed loss batch and the quality floor, the test half is the reference), or a
  (train, test) pair.

Nothing is written: each function returns the JSON-ready dict its command would write
(`flatgen sharpness` / `flatgen robustness`), measured the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, as_epsilon_model, fixed_diffusion_loss_fn
from flatgen.evaluate import FLOOR_SEED
from flatgen.flatness import SHARPNESS_SEED
from flatgen.metrics import train_floor_sample
from flatgen.open_model import load as open_model
from flatgen.optional import check_versions

Data = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
SPLIT_SEED = 0


class Denoiser(nn.Module):
    """net(x, t) -> tensor for a module that returns a tensor, a diffusers output (`.sample`)
    or a tuple whose first item is the prediction (diffusers' return_dict=False)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.module(x, t)
        if isinstance(out, torch.Tensor):
            return out
        if hasattr(out, "sample") and isinstance(out.sample, torch.Tensor):
            return out.sample
        if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise TypeError(f"the model returned a {type(out).__name__}: flatgen reads a tensor or a "
                        "diffusers output with .sample")


def as_denoiser(model: nn.Module) -> nn.Module:
    """The model as net(x, t) -> tensor (wrapped in Denoiser unless it already is one)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model if isinstance(model, Denoiser) else Denoiser(model)


def as_schedule(schedule: Any) -> NoiseSchedule:
    """A NoiseSchedule from itself, a diffusers scheduler or a scheduler config mapping."""
    if isinstance(schedule, NoiseSchedule):
        return schedule
    config = getattr(schedule, "config", schedule)
    if not isinstance(config, Mapping):
        raise TypeError("schedule must be a flatgen NoiseSchedule, a diffusers scheduler or its "
                        f"config, got {type(schedule).__name__}")
    return NoiseSchedule.from_scheduler_config(config)


def split_data(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test): a given pair as is, or a tensor shuffled (SPLIT_SEED) into two halves."""
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise ValueError("data must be an image tensor or a (train, test) pair")
        return data[0], data[1]
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or len(data) < 4:
        raise ValueError("data must be a tensor of at least 4 samples (N, ...) in [-1, 1]")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(SPLIT_SEED))
    half = len(data) // 2
    return data[perm[:half]], data[perm[half:]]


def sharpness(
    model: nn.Module,
    schedule: Any,
    data: Data,
    *,
    batch: int = 256,
    top_k: int = 5,
    trace: bool = True,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    sigmas: Sequence[float] = (0.01, 0.05, 0.1),
    **options: Any,
) -> dict[str, Any]:
    """flatgen.analysis.sharpness_summary of the model on `batch` fixed (x0, t, noise) triples
    of the training data: the loss, λmax and top-k, trace, worst-case and random-perturbation
    sharpness, the same measures as `flatgen sharpness`. options go to sharpness_summary."""
    from flatgen.analysis import sharpness_summary

    check_versions()
    net, s = as_denoiser(model), as_schedule(schedule)
    train, _ = split_data(data)
    x0 = train_floor_sample(train, min(batch, len(train)), seed=SHARPNESS_SEED)
    loss_fn = fixed_diffusion_loss_fn(x0, s, draws=1, seed=SHARPNESS_SEED)
    was_training = net.training
    net.eval()
    try:
        summary = sharpness_summary(net, loss_fn, top_k=top_k, trace=trace, rhos=list(rhos),
                                    sigmas=list(sigmas), **options)
    finally:
        net.train(was_training)
    return summary | {"batch": len(x0)}


def robustness(
    model: nn.Module,
    schedule: Any,
    data: Data,
    *,
    suites: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    name: str = "model",
    selection: bool = False,
    progress: bool = False,
    inception_weights: str | Path | None = None,
) -> dict[str, Any]:
    """The robustness ladders of `flatgen robustness` (default: every registered suite) for one
    model; settings are the keys of a study's evaluations.robustness section (e.g. {"n_samples":
    64, "bits": [8, 4]}). RGB data are scored with Inception FID where inception_weights (a
    .safetensors file) are given, else with pixel W2, noted "cannot rank". Returns the per-suite
    results, "summary", "ladders" (records) and "metric_note"."""
    from flatgen.robustness import run_robustness_suite
    from flatgen.robustness.settings import RobustnessSettings

    check_versions()
    net, s = as_denoiser(model), as_schedule(schedule)
    train, test = split_data(data)
    cfg = RobustnessSettings.model_validate(dict(settings or {}))
    size = cfg.n_samples or len(test)
    floor_ref = train_floor_sample(train, min(len(train), max(size, len(test))), seed=FLOOR_SEED)
    models = {name: as_epsilon_model(net.eval(), s)}  # the suites read eps
    return run_robustness_suite(models, s, test, floor_reference=floor_ref, suites=suites,
                                settings=cfg, selection=selection, progress=progress,
                                inception_weights=inception_weights)


__all__ = ["Denoiser", "as_denoiser", "as_schedule", "open_model", "robustness", "sharpness",
           "split_data"]
