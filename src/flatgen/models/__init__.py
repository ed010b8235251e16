"""Denoiser models by name (flatgen.models.registry): diffusers U-Net presets and a
time-conditioned MLP. All are called net(x, t). Importing this package registers the built-ins."""

from __future__ import annotations

from typing import Any

from torch import nn

from flatgen.models.mlp import TimeMLP, timestep_embedding
from flatgen.models.registry import (
    MODEL_PRESETS,
    ModelPreset,
    build_model,
    check_fits,
    get_model_preset,
    model_preset_names,
    register_model_preset,
)
from flatgen.models.unet import UNET_PRESETS, UNetDenoiser, build_unet


def model_from_config(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    """The denoiser a model config (flatgen.config.ModelConfig) names: a preset, or the
    pretrained weights of a diffusers dir."""
    if not cfg.pretrained:
        return build_model(cfg.preset, sample_shape, cfg.dropout)
    from flatgen.models.pretrained import load_pretrained_unet
    from flatgen.models.pretrained import sample_shape as pretrained_shape

    expected = pretrained_shape(cfg.pretrained)
    if tuple(sample_shape) != expected:
        raise ValueError(f"model.pretrained {cfg.pretrained!r} denoises images of shape "
                         f"{expected}; the data has shape {tuple(sample_shape)}")
    return load_pretrained_unet(cfg.pretrained, cfg.dropout)


__all__ = ["MODEL_PRESETS", "ModelPreset", "TimeMLP", "UNetDenoiser", "UNET_PRESETS",
           "build_model", "build_unet", "check_fits", "get_model_preset", "model_from_config",
           "model_preset_names", "register_model_preset", "timestep_embedding"]
