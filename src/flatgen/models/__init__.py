"""Denoiser models: diffusers U-Net presets and a time-conditioned MLP. All are called net(x, t)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from flatgen.models.mlp import TimeMLP, timestep_embedding
from flatgen.models.unet import UNET_PRESETS, UNetDenoiser, build_unet

if TYPE_CHECKING:
    from flatgen.config import ModelConfig

MODEL_PRESETS = (*UNET_PRESETS, "mlp2d")


def build_model(preset: str, sample_shape: tuple[int, ...], dropout: float | None = None) -> nn.Module:
    """Build a denoiser for data of shape sample_shape ((C, H, W) for images, (D,) for vectors)."""
    if preset == "mlp2d":
        if len(sample_shape) != 1:
            raise ValueError(f"preset 'mlp2d' needs vector data, got sample shape {sample_shape}")
        return TimeMLP(dim=sample_shape[0], dropout=dropout or 0.0)
    if preset in UNET_PRESETS:
        if len(sample_shape) != 3:
            raise ValueError(f"preset {preset!r} needs image data (C, H, W), got {sample_shape}")
        channels, size, _ = sample_shape
        return build_unet(preset, sample_size=size, channels=channels, dropout=dropout)
    raise ValueError(f"unknown model preset {preset!r}; choose from {', '.join(MODEL_PRESETS)}")


def model_from_config(cfg: ModelConfig, sample_shape: tuple[int, ...]) -> nn.Module:
    """The denoiser a model config names: a preset, or the pretrained weights of a diffusers dir."""
    if not cfg.pretrained:
        return build_model(cfg.preset, sample_shape, cfg.dropout)
    from flatgen.models.pretrained import load_pretrained_unet
    from flatgen.models.pretrained import sample_shape as pretrained_shape

    expected = pretrained_shape(cfg.pretrained)
    if tuple(sample_shape) != expected:
        raise ValueError(f"model.pretrained {cfg.pretrained!r} denoises images of shape {expected}; "
                         f"the data has shape {tuple(sample_shape)}")
    return load_pretrained_unet(cfg.pretrained, cfg.dropout)


__all__ = ["MODEL_PRESETS", "TimeMLP", "UNetDenoiser", "UNET_PRESETS", "build_model", "build_unet",
           "model_from_config", "timestep_embedding"]
