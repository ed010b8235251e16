"""Validated configuration: pydantic models for every section, YAML in, resolved YAML out.

Unknown keys are errors (a typo must not silently fall back to a default). `--set a.b=c`
overrides are parsed by YAML and then validated against the model, so they are typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from flatgen.io import YAMLInputError, load_yaml, resolve_config_paths
from flatgen.wrm_config import WRMConfig


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the offending key."""


# resource bounds, checked before anything is written (the limit is in pydantic's message)
MAX_STEPS = 10**9  # training steps, and the step counts of logging and checkpointing
MAX_BATCH = 65536  # a global batch larger than this cannot fit any device flatgen targets
MAX_SAMPLES = 10**7  # sample counts (toy2d sizes, evaluation samples)
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit; torch's are wider
MAX_IMAGE_SIZE = 4096
MAX_TIMESTEPS = 100_000

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def _distinct_seeds(v: list[int]) -> list[int]:
    if not v:
        raise ValueError("at least one seed")
    return list(dict.fromkeys(v))


# the seeds of a study: at least one, duplicates dropped (order kept)
Seeds = Annotated[list[Seed], AfterValidator(_distinct_seeds)]


class Section(BaseModel):
    # inf / nan are refused: `train.lr=.inf` would train to NaN weights. strict: a boolean is
    # not a number (`train.steps=true` must not train one step), a number is not a name
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              strict=True)


def _registered_dataset(v: str) -> str:
    from flatgen.data import get_dataset  # registers the datasets (loads torch)

    get_dataset(v)  # ValueError naming the registered datasets
    return v


class DataConfig(Section):
    """A dataset registered in flatgen.data (flatgen.data.dataset_names()) and its options;
    each dataset reads the fields it names in its `options`."""

    name: Annotated[str, AfterValidator(_registered_dataset)] = "digits"
    toy: str = "8gaussians"  # toy2d distribution
    # toy2d only; digits and real data use their own split
    n_train: int = Field(20000, gt=0, le=MAX_SAMPLES)
    n_test: int = Field(2000, gt=0, le=MAX_SAMPLES)
    path: str | None = None  # image_folder / cifar10
    image_size: int = Field(32, gt=0, le=MAX_IMAGE_SIZE)  # image_folder
    channels: int = Field(3, ge=1, le=4)  # image_folder
    test_fraction: float = Field(0.1, gt=0, lt=1)  # image_folder: held-out share

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        from flatgen.data import check_data_options

        check_data_options(self)  # data.path given where needed, the dataset's own checks
        return self


def _registered_model_preset(v: str) -> str:
    from flatgen.models import get_model_preset  # registers the presets

    get_model_preset(v)  # ValueError naming the registered presets
    return v


class ModelConfig(Section):
    # a preset registered in flatgen.models (flatgen.models.model_preset_names())
    preset: Annotated[str, AfterValidator(_registered_model_preset)] = "unet-digits"
    dropout: float | None = Field(None, ge=0, lt=1)  # None keeps the preset's
    # a diffusers pipeline or UNet2DModel directory to fine-tune (preset is then unused); the
    # diffusion section is read from its scheduler config
    pretrained: str | None = None


class DiffusionConfig(Section):
    schedule: Literal["linear", "cosine", "scaled_linear"] = "linear"
    timesteps: int = Field(1000, ge=2, le=MAX_TIMESTEPS)
    beta_start: float = Field(0.0001, gt=0, lt=1)  # linear / scaled_linear only
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"


def _registered_sam_variant(v: str) -> str:
    from flatgen.optim.registry import sam_variant  # torch is loaded only when a SAM is asked for

    sam_variant(v)  # ValueError naming the registered variants
    return v


class SAMConfig(Section):
    variant: Annotated[str, AfterValidator(_registered_sam_variant)] = "sam"  # flatgen.optim
    rho: float = Field(0.05, gt=0)
    adaptive: bool = False  # ASAM
    eta: float = Field(0.01, ge=0)  # ASAM's offset in T = |w| + eta (Kwon et al. 2021)
    k: int = Field(5, ge=1, le=MAX_STEPS)  # LookSAM / SAM-every-k period
    alpha: float = Field(0.7, ge=0)  # LookSAM gradient-reuse weight
    sync_perturbation: bool = False  # DDP: all-reduce the ascent gradient too


class EMAConfig(Section):
    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True


class SWAConfig(Section):
    start: float = Field(0.5, ge=0)  # fraction of train.steps if < 1, else a step number
    every: int = Field(10, ge=1, le=MAX_STEPS)


METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "adm": {},
    "ema": {"ema": {}},
    "swa": {"swa": {}},
    "ip": {"ip_gamma": 0.1},
    "ip+ema": {"ip_gamma": 0.1, "ema": {}},
    "ip+swa": {"ip_gamma": 0.1, "swa": {}},
    "sam": {"sam": {}},
    "sam+ema": {"sam": {}, "ema": {}},
    "sam+swa": {"sam": {}, "swa": {}},
}


class MethodConfig(Section):
    """Composable flatness-seeking method. A preset fills in sections not given explicitly."""

    preset: str | None = None
    sam: SAMConfig | None = None
    ema: EMAConfig | None = None
    swa: SWAConfig | None = None
    ip_gamma: float = Field(0.0, ge=0)  # input perturbation (DDPM-IP)
    dro: WRMConfig | None = None  # WRM: train on x0 moved adversarially (Sinha et al. 2018)

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = data["preset"]
        if not isinstance(preset, str) or preset not in METHOD_PRESETS:
            raise ValueError(f"method.preset must be one of {', '.join(METHOD_PRESETS)}, "
                             f"got {preset!r}")
        merged = dict(METHOD_PRESETS[preset])
        merged.update({k: v for k, v in data.items() if v is not None})
        return merged

    @property
    def name(self) -> str:
        parts = (["ip"] if self.ip_gamma > 0 else []) + (["sam"] if self.sam else [])
        parts += ["wrm"] if self.dro else []
        parts += (["ema"] if self.ema else []) + (["swa"] if self.swa else [])
        return "+".join(parts) or "adm"


class TrainConfig(Section):
    steps: int = Field(1500, gt=0, le=MAX_STEPS)
    # global batch, split over processes and micro-batches
    batch_size: int = Field(128, gt=0, le=MAX_BATCH)
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0, le=MAX_STEPS)
    lr_decay: Literal["constant", "cosine"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)
    seed: Seed = 0
    log_every: int = Field(25, gt=0, le=MAX_STEPS)
    ckpt_every: int = Field(250, gt=0, le=MAX_STEPS)
    # checkpoints/step-<n> kept besides checkpoints/last
    keep_checkpoints: int = Field(3, ge=0, le=10_000)
    # None: what `accelerate launch` / `accelerate config` / ACCELERATE_MIXED_PRECISION say
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    cpu: bool = False  # force the CPU even where a GPU exists
    log_with: Literal["none", "tensorboard", "wandb"] = "none"  # Accelerate's trackers
    # a sample grid in samples/step-<n>.png
    sample_every: int | None = Field(None, gt=0, le=MAX_STEPS)
    # torch.compile the training forward (inductor, cache in RUN/.cache); None: on with CUDA
    compile: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.grad_accum > self.batch_size:  # each micro-batch needs one sample at least
            raise ValueError(f"grad_accum {self.grad_accum} splits train.batch_size "
                             f"{self.batch_size} into empty micro-batches: at most "
                             f"{self.batch_size}")
        return self


class Config(Section):
    task: Literal["diffusion"] = "diffusion"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _pretrained_diffusion(cls, data: Any) -> Any:
        # a pretrained model brings its own schedule: fill in what the config does not say,
        # refuse what contradicts it
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, dict) or not model.get("pretrained"):
            return data
        from flatgen.models.pretrained import diffusion_fields

        if not isinstance(model["pretrained"], str):
            return data  # the field's own validation says what is wrong
        try:
            fields = diffusion_fields(model["pretrained"])
        except (ValueError, OSError, TypeError, KeyError, AttributeError) as err:
            # a malformed diffusers config (null or a list for a number) is an input error
            raise ValueError(f"model.pretrained: {_one_line(err)}") from None
        given = data.get("diffusion") or {}
        if not isinstance(given, dict):
            return data
        given = dict(given)
        for key, value in given.items():
            if key in fields and value != fields[key]:
                raise ValueError(f"diffusion.{key} {value!r} contradicts the pretrained model's "
                                 f"scheduler ({fields[key]!r}): drop it from the config")
        return {**data, "diffusion": {**fields, **given}}

    @model_validator(mode="after")
    def _check(self) -> Config:
        from flatgen.data import sample_shape
        from flatgen.models import check_fits

        swa = self.method.swa
        if swa is not None and swa.start >= 1 and swa.start >= self.train.steps:
            # the average would hold no step: the "swa" weights would be the initial ones
            raise ValueError(f"method.swa.start: step {swa.start:g} is not before the last step "
                             f"(train.steps={self.train.steps}): give a smaller step or a "
                             "fraction < 1")
        shape = sample_shape(self.data)
        if self.model.pretrained:
            if len(shape) != 3:
                raise ValueError(f"model.pretrained needs image data, not {self.data.name}")
            return self
        check_fits(self.model.preset, shape, f"data {self.data.name!r}")
        return self


def format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid config: {key}: {msg}{more}"


# how a run is executed and watched, not what it computes: a resumed run or a study may change
# them, and runs saved before these defaults changed (mixed_precision "no") stay reusable
EXECUTION_KEYS = ("train.mixed_precision", "train.cpu", "train.log_with", "train.sample_every")


def config_changes(old: Any, new: Any, prefix: str = "", *,
                   ignore: tuple[str, ...] = EXECUTION_KEYS) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf where two nested dicts (dumped configs) differ,
    except the keys in `ignore`."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*old, *new])
                for change in config_changes(old.get(key), new.get(key), f"{prefix}{key}.",
                                             ignore=ignore)]
    key = prefix.rstrip(".")
    return [] if old == new or key in ignore else [(key, old, new)]


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _apply_override(data: dict, assignment: str) -> None:
    if not isinstance(assignment, str) or "=" not in assignment:
        raise ConfigError(f"--set expects key.sub=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"--set expects key.sub=value, got {assignment!r}")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YAMLInputError as err:
        raise ConfigError(f"--set {key}: the value is not valid YAML: {err}") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])!r} is not a section")
        node[part] = child = dict(child)  # a copy: the caller's nested dicts stay as they were
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of `data` with `key.sub=value` overrides applied; ConfigError if one is malformed."""
    data = dict(data)
    for assignment in overrides:
        _apply_override(data, assignment)
    return data


def check_set_values(assignments: list[str]) -> list[str]:
    """The `--set KEY=VALUE` assignments, unchanged, once every VALUE has passed the one YAML
    loader (no repeated key, no tag, no deep nesting); ConfigError naming the key if not."""
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        try:
            load_yaml(raw) if raw.strip() else None
        except YAMLInputError as err:
            raise ConfigError(f"--set {key.strip()}: the value is not valid YAML: {err}") from None
    return assignments


def build_config(data: dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a config dict after applying `key.sub=value` overrides; raise ConfigError."""
    data = apply_overrides(data or {}, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def read_yaml_mapping(path: str | Path, what: str = "config file", fix: str = "") -> dict:
    """The mapping a YAML file holds; ConfigError (one line, ending in `fix` if given) if it is
    missing, unreadable, empty, not valid YAML or not a mapping."""
    path = Path(path)
    tail = f": {fix}" if fix else ""
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder{tail or ': give a YAML file'}")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found{tail}")
    try:
        data = load_yaml(path.read_text())
    except YAMLInputError as err:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML ({err}){tail}") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({reason}){tail}") from None
    if data is None:
        raise ConfigError(f"{what} {str(path)!r} is empty"
                          + (tail or ": write the sections to change (see configs/), "
                             "or `{}` for every default"))
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping of sections{tail}")
    return data


RUN_CONFIG = "config.yaml"  # the name of a run's own config


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, fix: str = ""
) -> Config:
    """Read a YAML config file, apply overrides, validate; `fix` ends any error message."""
    data = resolve_config_paths(read_yaml_mapping(path, fix=fix), path)
    if Path(path).name == RUN_CONFIG and isinstance(data.get("eval"), dict):
        # a run's own config.yaml from before the `eval:` section went (nothing ever read it)
        data.pop("eval")
    try:
        return build_config(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{err} in {str(path)!r}" + (f": {fix}" if fix else "")) from None


def dump_config(cfg: Config) -> str:
    """The resolved config (every default filled in) as YAML."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
