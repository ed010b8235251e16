"""The denoiser presets by name: one registry that the config, build_model and the CLI read.

A preset is a `ModelPreset` registered with `register_model_preset` in the module that
defines its network (flatgen.models imports each such module). It says what samples it
denoises (sample_ndim 3: images C x H x W; 1: vectors), so a config that pairs it with data of
another shape is refused when it is validated. Adding a preset is one registration (a new
module, imported by flatgen.models, for a new architecture) plus its test. Import these
functions from flatgen.models, which registers the built-in presets first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flatgen.registry import Registry

KINDS = {1: "vectors (D,)", 3: "images (C, H, W)"}


@dataclass(frozen=True)
class ModelPreset:
    """build(sample_shape, dropout) -> a module called net(x, t) that predicts the target;
    dropout None keeps the preset's own. sample_shape: the sample it is made for, e.g. (1, 8, 8)
    (optional; the registry conformance test builds and runs the preset on it)."""

    name: str
    build: Callable[[tuple[int, ...], float | None], Any]
    sample_ndim: int
    help: str
    sample_shape: tuple[int, ...] | None = None


# name -> ModelPreset, in registration order; filled when flatgen.models loads
MODEL_PRESETS: Registry[ModelPreset] = Registry("model preset")


def register_model_preset(preset: ModelPreset) -> ModelPreset:
    """Add `preset` to MODEL_PRESETS under its name (a name may be taken once)."""
    return MODEL_PRESETS.register(preset.name, preset)


def model_preset_names(*, sample_ndim: int | None = None) -> tuple[str, ...]:
    """The registered preset names (those for samples of `sample_ndim` dims, if given)."""
    return tuple(n for n, p in MODEL_PRESETS.items()
                 if sample_ndim is None or p.sample_ndim == sample_ndim)


def get_model_preset(name: str) -> ModelPreset:
    """The registered preset `name`; ValueError naming the choices otherwise."""
    return MODEL_PRESETS.get(name)


def check_fits(name: str, sample_shape: tuple[int, ...], data: str = "the data") -> None:
    """ValueError (one line) when preset `name` cannot denoise samples of `sample_shape`."""
    preset = get_model_preset(name)
    if len(sample_shape) == preset.sample_ndim:
        return
    fitting = ", ".join(model_preset_names(sample_ndim=len(sample_shape))) or "none registered"
    kind = KINDS.get(preset.sample_ndim, f"{preset.sample_ndim}-D samples")
    raise ValueError(f"model.preset {name!r} denoises {kind}, but {data} has samples of shape "
                     f"{tuple(sample_shape)}: choose one of {fitting}")


def build_model(preset: str, sample_shape: tuple[int, ...], dropout: float | None = None) -> Any:
    """Build a denoiser for data of shape sample_shape ((C, H, W) for images, (D,) for vectors)."""
    check_fits(preset, tuple(sample_shape))
    return get_model_preset(preset).build(tuple(sample_shape), dropout)
