"""Models that flatgen did not train: a diffusers pipeline directory or a UNet2DModel directory.

A pipeline directory (DDPMPipeline.save_pretrained) holds model_index.json, unet/ and
scheduler/. A UNet directory holds config.json (`_class_name: UNet2DModel`) and its weights; its
noise schedule is read from a scheduler_config.json beside them, or from ../scheduler/.
Everything is read from local files (safetensors and JSON); nothing is downloaded, written or
unpickled: a folder holding only diffusers' pickled .bin weights is refused, and the weights
are loaded with use_safetensors=True.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PIPELINE_INDEX = "model_index.json"
SCHEDULER_FILE = "scheduler_config.json"
UNET_CLASSES = ("UNet2DModel",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {str(path)!r}: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return data


def is_diffusers_dir(path: str | Path) -> bool:
    """A diffusers pipeline directory, or a directory holding a diffusers model config."""
    path = Path(path)
    if (path / PIPELINE_INDEX).is_file():
        return True
    config = path / "config.json"
    return config.is_file() and "_class_name" in _read_json(config)


def unet_dir(path: str | Path) -> Path:
    """The folder of the UNet2DModel inside a pipeline directory, or the directory itself."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"pretrained model directory {str(path)!r} not found")
    folder = path / "unet" if (path / PIPELINE_INDEX).is_file() else path
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{str(path)!r} is neither a diffusers pipeline (model_index.json with "
                         "unet/) nor a UNet directory (config.json)")
    name = _read_json(config).get("_class_name")
    if name not in UNET_CLASSES:
        raise ValueError(f"{str(folder)!r} holds a {name!r}; flatgen reads unconditional "
                         f"{', '.join(UNET_CLASSES)} denoisers")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        what = f"only the pickled {pickled[0]}" if pickled else "no weights file"
        raise ValueError(f"{str(folder)!r} holds {what}; flatgen loads safetensors only: resave "
                         "it once with UNet2DModel.from_pretrained(DIR).save_pretrained(NEW_DIR)")
    return folder


def unet_config(path: str | Path) -> dict[str, Any]:
    """The UNet2DModel config of a pipeline or UNet directory."""
    cfg = _read_json(unet_dir(path) / "config.json")
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise ValueError(f"the UNet in {str(path)!r} is class-conditional; flatgen analyses "
                         "unconditional denoisers")
    if cfg.get("out_channels", 3) != cfg.get("in_channels", 3):
        raise ValueError(f"the UNet in {str(path)!r} has out_channels {cfg.get('out_channels')} "
                         f"!= in_channels {cfg.get('in_channels')} (a learned variance?): "
                         "flatgen reads networks that predict eps, v or x0 only")
    return cfg


def scheduler_config(path: str | Path) -> dict[str, Any]:
    """The scheduler config that goes with a pipeline or UNet directory."""
    path = Path(path)
    for candidate in (path / "scheduler" / SCHEDULER_FILE, path / SCHEDULER_FILE,
                      path.parent / "scheduler" / SCHEDULER_FILE):
        if candidate.is_file():
            return _read_json(candidate)
    raise ValueError(f"no scheduler config for {str(path)!r}: put the scheduler_config.json "
                     "the model was trained with beside its config.json")


def diffusion_fields(path: str | Path) -> dict[str, Any]:
    """flatgen's `diffusion` config section for a pretrained directory (or a one-line refusal)."""
    from flatgen.diffusion.schedule import NoiseSchedule

    unet_config(path)  # a model directory first (a missing one must not find ../scheduler)
    s = NoiseSchedule.from_scheduler_config(scheduler_config(path))
    return {"schedule": s.kind, "timesteps": s.timesteps, "beta_start": s.beta_start,
            "beta_end": s.beta_end, "prediction_type": s.prediction_type}


def sample_shape(path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of the images the UNet denoises."""
    cfg = unet_config(path)
    size = cfg.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"the UNet in {str(path)!r} has non-square sample_size {size}")
        size = size[0]
    if not isinstance(size, int):
        raise ValueError(f"the UNet in {str(path)!r} has no integer sample_size")
    return int(cfg.get("in_channels", 3)), size, size


def load_pretrained_unet(path: str | Path, dropout: float | None = None):
    """The directory's UNet2DModel as a flatgen denoiser net(x, t), in train mode on the CPU."""
    from diffusers import UNet2DModel

    from flatgen.models.unet import UNetDenoiser

    unet_config(path)  # refuse class-conditional / learned-variance networks first
    kwargs = {} if dropout is None else {"dropout": dropout}
    unet = UNet2DModel.from_pretrained(str(unet_dir(path)), local_files_only=True,
                                       use_safetensors=True, **kwargs)
    return UNetDenoiser(unet).train()
