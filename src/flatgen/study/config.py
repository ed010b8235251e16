"""The study config: methods x seeds x evaluations on top of one base training config."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from flatgen.config import (
    MAX_SAMPLES,
    METHOD_PRESETS,
    Config,
    ConfigError,
    Section,
    Seeds,
    build_config,
    format_validation_error,
    read_yaml_mapping,
)
from flatgen.io import resolve_config_paths
from flatgen.report.claims import CLAIMS, Verdicts
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites import SUITES
from flatgen.robustness.suites.steps import StepsSettings
from flatgen.study.executors import SlurmSettings

DEFAULT_SUITES = ("steps", "exposure", "quant", "attack", "noise")
BASELINES = ("adm", "ema", "swa")  # the methods whose ladders choose a claim's level


class StudyEvaluations(Section):
    """Which measurements each (method, seed) gets; the defaults fit 2 CPU cores."""

    quality_steps: list[int] = Field(default_factory=lambda: [20, 100])  # T' (paper: 20, 100)
    sampler: Literal["adm", "ddim"] = "adm"  # the paper's stochastic sampler
    n_samples: int | None = Field(None, gt=1, le=MAX_SAMPLES)  # None: the test-set size
    sharpness: bool = True
    sharpness_batch: int = Field(256, gt=0)  # fixed (x0, t, noise) triples for the Hessian
    trace_matvecs: int = Field(30, ge=3)
    # loss-under-perturbation curves on the same fixed batch ([] skips a curve): worst case
    # within a per-filter ball ||d_f|| <= rho ||w_f|| (multi-step ascent from a random start, not
    # SAM's own step), and mean under per-filter Gaussian noise sigma
    perturbation_rhos: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])
    perturbation_sigmas: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])
    perturbation_draws: int = Field(4, ge=1)
    # the second-order expansion checked on the quantization, weight-noise and worst-case
    # perturbations: measured vs predicted loss rise (study/expansion.py); with sharpness only
    expansion: bool = True
    # robustness suites (names from flatgen.robustness.suites.SUITES) and their settings
    suites: list[str] = Field(default_factory=lambda: list(DEFAULT_SUITES))
    robustness: RobustnessSettings = Field(default_factory=RobustnessSettings)
    # methods whose ladders are also measured on the separate selection noise (the baselines
    # a claim's threshold scale, and a level without a pre-registered one, come from); the
    # others get select_* = None. The claims use the mean over seeds of those ladders, so they
    # are measured on these seeds only (None: every seed)
    selection_methods: list[str] = Field(default_factory=lambda: list(BASELINES))
    selection_seeds: list[int] | None = Field(default_factory=lambda: [0, 1])
    # the second-order expansion check is descriptive (no claim tests it): these seeds only
    expansion_seeds: list[int] | None = Field(default_factory=lambda: [0, 1])

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SUITES]
        if bad:
            raise ValueError(f"unknown suite(s) {bad}; choose from {', '.join(SUITES)}")
        return list(dict.fromkeys(v))

    @field_validator("selection_methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHOD_PRESETS]
        if bad:
            raise ValueError(f"selection_methods must be from {', '.join(METHOD_PRESETS)}; "
                             f"got {bad}")
        return list(dict.fromkeys(v))

    # RGB images: Inception FID / KID too, with the FID Inception weights at this local path
    # (safetensors: `python -m flatgen.metrics.inception convert` makes them from the .pth)
    inception_weights: str | None = None

    @field_validator("inception_weights")
    @classmethod
    def _safetensors(cls, v: str | None) -> str | None:
        if v is not None and not v.endswith(".safetensors"):
            raise ValueError(f"{v!r} is not a .safetensors file: convert the .pth once with "
                             "python -m flatgen.metrics.inception convert SRC.pth DST.safetensors")
        return v

    @model_serializer(mode="wrap")
    def _omit_unset_inception(self, handler):
        # results measured before this field existed still count as measured with these settings
        data = handler(self)
        if isinstance(data, dict) and data.get("inception_weights") is None:
            data.pop("inception_weights", None)
        return data


class StudyConfig(Section):
    # a plain name (letters, digits, . _ -): it names folders, so no path and no `..`
    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    base: dict[str, Any] = Field(default_factory=dict)  # a flatgen training config
    methods: list[str] = Field(default_factory=lambda: ["adm", "ema", "sam", "sam+ema"])
    seeds: Seeds = Field(default_factory=lambda: [0])
    # extra --set overrides per base trajectory, e.g. {"sam": ["method.sam.rho=0.5"]}
    overrides: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_overrides(self) -> StudyConfig:
        # a typo in a trajectory's name would apply its overrides to nothing, silently
        bases = list(dict.fromkeys(split_method(m)[0] for m in self.methods))
        bad = [b for b in self.overrides if b not in bases]
        if bad:
            raise ValueError(f"overrides: {bad[0]!r} is not a base trajectory of this study's "
                             f"methods ({', '.join(bases)})")
        return self
    evaluations: StudyEvaluations = Field(default_factory=StudyEvaluations)
    verdicts: Verdicts = Field(default_factory=Verdicts)
    slurm: SlurmSettings | None = None  # `flatgen study --executor slurm`: one job per unit

    @field_validator("methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHOD_PRESETS]
        if bad or not v:
            raise ValueError(f"methods must be from {', '.join(METHOD_PRESETS)}; got {bad or v}")
        return list(dict.fromkeys(v))

    @field_validator("verdicts")
    @classmethod
    def _known_claims(cls, v: Verdicts) -> Verdicts:
        bad = sorted((set(v.levels) | set(v.smallest_effects)) - set(CLAIMS))
        if bad:
            raise ValueError(f"verdicts name unknown claim(s) {', '.join(bad)}; claims: "
                             f"{', '.join(CLAIMS)}")
        return v

    @model_validator(mode="after")
    def _levels_on_ladders(self) -> StudyConfig:
        """A pre-registered level must be a level the claim's ladder measures (a typo would
        otherwise make the claim untestable after the whole study has run)."""
        for claim, level in self.verdicts.levels.items():
            spec = CLAIMS[claim]
            if spec.level_setting is None:
                raise ValueError(f"verdicts.levels.{claim}: {claim} is not judged on a ladder; "
                                 "levels fix degradation claims only")
            measured = ladder_levels(self.evaluations.robustness, spec.level_setting)
            if level not in measured:
                raise ValueError(f"verdicts.levels.{claim}: {level:g} is not a level the study "
                                 f"measures ({', '.join(f'{x:g}' for x in measured)})")
        return self


def ladder_levels(settings: RobustnessSettings, setting: str) -> list[float]:
    """The levels a ladder measures: the robustness setting it is built from ('steps': every T'
    but the largest, the clean one; 'bits')."""
    if setting == "steps":
        return [float(x) for x in StepsSettings.of(settings).ladder_steps()[1]]
    return [float(x) for x in getattr(settings, setting)]


def split_method(method: str) -> tuple[str, str]:
    """(base trajectory, weights): 'sam+ema' -> ('sam', 'ema'), 'ema' -> ('adm', 'ema').

    EMA and SWA are averages of the weights a run passes through; they never feed back into
    training. So 'sam', 'sam+ema' and 'sam+swa' are three views of ONE trajectory, and a study
    trains each base trajectory once per seed with both averages tracked.
    """
    parts = method.split("+")
    weights = "ema" if "ema" in parts else "swa" if "swa" in parts else "raw"
    base = "+".join(p for p in parts if p not in ("ema", "swa")) or "adm"
    return base, weights


def unit_config(study: StudyConfig, base: str, seed: int) -> Config:
    """The training config of one base trajectory and seed, with the averages it needs."""
    weights = {split_method(m)[1] for m in study.methods if split_method(m)[0] == base}
    data = copy.deepcopy(study.base)  # build_config fills nested sections: never the study's own
    method = dict(data.get("method") or {})
    method["preset"] = base
    if "ema" in weights:
        method.setdefault("ema", {})
    if "swa" in weights:
        method.setdefault("swa", {})
    data["method"] = method
    overrides = [f"train.seed={seed}", *study.overrides.get(base, [])]
    return build_config(data, overrides)


def load_study_config(path: str | Path) -> StudyConfig:
    """The validated study config of a YAML file; ConfigError (one line naming the file and the
    key) if it is missing, empty, not valid YAML or invalid."""
    path = Path(path)
    data = read_yaml_mapping(path, "study config")  # an empty file is refused, not defaulted
    if isinstance(data.get("base"), dict):  # the base config's files, from the study's folder
        resolve_config_paths(data["base"], path)
    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as err:
        msg = format_validation_error(err).replace("invalid config", "invalid study config")
        raise ConfigError(f"{msg} in {str(path)!r}") from None
    n = study.evaluations.n_samples
    if n is not None and n > MAX_SAMPLES:  # a resource bound, checked before any work
        raise ConfigError(f"invalid study config: evaluations.n_samples: {n} is more than "
                          f"{MAX_SAMPLES} in {str(path)!r}")
    for base in {split_method(m)[0] for m in study.methods}:
        for seed in study.seeds:
            try:  # fail now, not after an hour of training
                cfg = unit_config(study, base, seed)
            except ConfigError as err:
                raise ConfigError(f"{err} (study {str(path)!r}, base and overrides of "
                                  f"{base!r})") from None
            try:
                study.evaluations.robustness.check_timesteps(
                    cfg.diffusion.timesteps, study.evaluations.suites
                )
            except ValueError as err:
                raise ConfigError(f"invalid study config: evaluations.robustness: {err}") from None
    return study
