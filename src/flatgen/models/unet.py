"""diffusers UNet2DModel presets, wrapped so every denoiser is called as net(x, t) -> eps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from flatgen.models.registry import ModelPreset, register_model_preset

if TYPE_CHECKING:
    from diffusers import UNet2DModel

# name -> UNet2DModel keyword arguments (sample_size / channels are filled in from the data)
UNET_PRESETS: dict[str, dict] = {
    # ~0.7M parameters; about 7 training it/s at batch 128 on 2 CPU cores
    "unet-digits": dict(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=32,
        dropout=0.0,
    ),
    # ADM-like for 32x32 (CIFAR-10): 128 base channels, attention at 16x16 and 8x8, dropout 0.1
    "unet-adm32": dict(
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=64,
        dropout=0.1,
        resnet_time_scale_shift="scale_shift",
    ),
    # ADM-ES's published CIFAR-10 flags (github.com/forever208/ADM-ES, README "CIFAR-10
    # (uncond)"): --num_channels 128 --num_res_blocks 3 --attention_resolutions 16,8
    # --num_head_channels 32 --resblock_updown True --dropout 0.3 --use_scale_shift_norm True
    # (channel_mult 1,2,2,2 at 32x32, guided-diffusion's default). Not carried over:
    # learn_sigma (flatgen samples with the fixed-small variance) and use_new_attention_order.
    "unet-adm-cifar10": dict(
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=3,
        norm_num_groups=32,
        attention_head_dim=32,
        dropout=0.3,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
    ),
}


class UNetDenoiser(nn.Module):
    """A UNet2DModel predicting the noise eps from (x_t, t)."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def build_unet(preset: str, sample_size: int, channels: int, *,
               dropout: float | None = None) -> UNetDenoiser:
    """The diffusers UNet2DModel of a preset for square images of `channels` channels."""
    from diffusers import UNet2DModel  # imported when a U-Net is built: configs validate fast

    kwargs = dict(UNET_PRESETS[preset])
    if dropout is not None:
        kwargs["dropout"] = dropout
    unet = UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                       **kwargs)
    return UNetDenoiser(unet)


def _register(name: str, help_text: str) -> None:
    def build(shape: tuple[int, ...], dropout: float | None) -> UNetDenoiser:
        channels, size, width = shape
        if size != width:
            raise ValueError(f"model.preset {name!r} needs square images, got {shape}")
        return build_unet(name, sample_size=size, channels=channels, dropout=dropout)

    register_model_preset(ModelPreset(name=name, build=build, sample_ndim=3, help=help_text))


_register("unet-digits", "diffusers U-Net, ~0.7M weights, for the 8x8 digits")
_register("unet-adm32", "ADM-like U-Net for 32x32 images (128 channels, attention 16/8)")
_register("unet-adm-cifar10", "ADM-ES's published CIFAR-10 U-Net (3 res blocks, dropout 0.3)")
