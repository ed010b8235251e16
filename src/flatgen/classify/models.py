"""Small CNN classifiers (1x8x8 digits, 3x32x32 CIFAR-10), optional dropout and spectral norm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from flatgen.registry import Registry

# relu is the study's default; WRM uses a smooth one (its guarantee needs a loss smooth in x)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}

class SmallCNN(nn.Module):
    """Stages of 3x3 conv + activation (ReLU by default) followed by 2x2 max-pooling, then a
    hidden linear layer with the activation and dropout, then the logits."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        channels: Sequence[int] = (32, 64),
        convs_per_stage: int = 1,
        hidden: int = 128,
        n_classes: int = 10,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        act = ACTIVATIONS[activation]
        if image_size % (2 ** len(channels)):
            raise ValueError(f"image_size {image_size} does not halve {len(channels)} times")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), act()]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        side = image_size // 2 ** len(channels)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(c_in * side * side, hidden),
            act(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, N x n_classes."""
        return self.head(self.features(x))


@dataclass(frozen=True)
class ClassifierPreset:
    """A classifier architecture by name. build(dropout=, n_classes=, activation=, **overrides)
    -> nn.Module taking images of input_shape (C, H, W) in [0, 1] to logits; overrides (None
    values dropped) replace preset fields such as channels or hidden."""

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    help: str


# name -> ClassifierPreset; adding an architecture is one register_classifier_preset call
CLASSIFIER_PRESETS: Registry[ClassifierPreset] = Registry("classifier preset")


def register_classifier_preset(preset: ClassifierPreset) -> ClassifierPreset:
    """Add `preset` to CLASSIFIER_PRESETS under its name (a name may be taken once)."""
    return CLASSIFIER_PRESETS.register(preset.name, preset)


def classifier_preset(name: str) -> ClassifierPreset:
    """The registered preset `name`; ValueError naming the choices otherwise."""
    return CLASSIFIER_PRESETS.get(name)


def classifier_preset_for(input_shape: tuple[int, ...]) -> str:
    """The first registered preset made for images of `input_shape` (C, H, W)."""
    for preset in CLASSIFIER_PRESETS.values():
        if preset.input_shape == tuple(input_shape):
            return preset.name
    raise ValueError(f"no classifier preset takes images of shape {tuple(input_shape)}: "
                     "set model.preset")


def _small_cnn_preset(name: str, help_text: str, **fields: object) -> None:
    def build(**kwargs: object) -> nn.Module:
        return SmallCNN(**{**fields, **kwargs})

    shape = (fields["in_channels"], fields["image_size"], fields["image_size"])
    register_classifier_preset(ClassifierPreset(name, build, shape, help_text))  # type: ignore[arg-type]


# 8x8 -> conv 32 -> pool 4x4 -> conv 64 -> pool 2x2 -> 256 -> 128 -> 10 (about 53k weights)
_small_cnn_preset("cnn-digits", "small CNN for the 1x8x8 digits (about 53k weights)",
                  in_channels=1, image_size=8, channels=(32, 64), convs_per_stage=1, hidden=128)
# 32x32 -> 2 convs per stage, 3 stages -> 4x4 x 128 -> 256 -> 10
_small_cnn_preset("cnn-cifar", "small CNN for 3x32x32 images (2 convs per stage, 3 stages)",
                  in_channels=3, image_size=32, channels=(32, 64, 128), convs_per_stage=2,
                  hidden=256)


def build_classifier(
    preset: str = "cnn-digits",
    *,
    dropout: float = 0.0,
    spectral: bool = False,
    n_classes: int = 10,
    activation: str = "relu",
    **overrides: object,
) -> nn.Module:
    """A registered classifier preset; `overrides` replace preset fields (channels, hidden, ...)."""
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    model = classifier_preset(preset).build(
        n_classes=n_classes, dropout=dropout, activation=activation, **kwargs)
    return apply_spectral_norm(model) if spectral else model


def apply_spectral_norm(model: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalize the weight of every Conv2d and Linear layer of any model, in place.

    The normalized matrix is the weight reshaped to (out, in * k * k); its largest singular value
    is kept at ~1 by power iteration, one step per training forward pass. (For a convolution that
    bounds the operator norm only up to a factor of about the kernel size.)
    """
    for module in list(model.modules()):
        if isinstance(module, nn.Conv2d | nn.Linear) and not parametrize.is_parametrized(module):
            spectral_norm(module, n_power_iterations=n_power_iterations)
    return model


@torch.no_grad()
def layer_spectral_norms(model: nn.Module) -> dict[str, float]:
    """Largest singular value of each Conv2d / Linear weight as the forward pass uses it (the
    normalized weight where spectral norm is on), reshaped to (out, in * k * k)."""
    was_training = model.training
    model.eval()  # eval: read the weight without another power-iteration step
    try:
        return {
            name: float(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2))
            for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        }
    finally:
        model.train(was_training)
