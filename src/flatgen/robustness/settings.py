"""RobustnessSettings: the typed settings of every robustness suite (pydantic only, light to
import, so that a study config validates them before any training starts)."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Sampler = Literal["adm", "ddim"]


def _sorted_eps(v: list[float]) -> list[float]:
    if any(e < 0 for e in v):
        raise ValueError("epsilons and sigmas must be >= 0")
    return sorted(set(v))


class RobustnessSettings(BaseModel):
    """Sweep settings for run_robustness_suite; the defaults are the full ladders of issue 12."""

    model_config = ConfigDict(extra="forbid")

    # every draw of every suite derives from it (x_T, sampler noise, attack images and starts,
    # weight-noise directions), the selection stream's apart from the verdict's: a study sets
    # it from the training seed, so the noise is common to the models of a seed, new across
    seed: int = 0
    n_samples: int | None = Field(128, ge=2)  # generated samples per evaluation; None: floor size
    batch_size: int = Field(256, ge=1)
    # the quality key that ladders and robust epsilons use (lower is better); None: digits_fid
    # where the quality function reports it (it reacts far more than W2 on digits), else w2
    metric: str | None = None
    robust_fraction: float = Field(0.5, gt=0)  # "degraded" = metric up by this fraction

    # steps ladder: the largest T' is the clean level, the others the ladder, many to few steps
    steps: list[int] = Field(default_factory=lambda: [3, 5, 10, 20, 50, 100])
    samplers: list[Sampler] = Field(default_factory=lambda: ["adm", "ddim"])
    eval_steps: int = Field(20, ge=1)  # sampler used for the quant and noise ladders
    eval_sampler: Sampler = "adm"
    # exposure bias: the eps-norm gap at each of these T' (the runs are shared with the steps
    # ladder when it has them), the variance error delta_t at the largest
    exposure_steps: list[int] = Field(default_factory=lambda: [10, 20])
    exposure_sampler: Sampler = "adm"
    variance_hops: list[int | None] = Field(default_factory=lambda: [1, None])  # None: from top

    # quantization ladders: bits x granularity x scheme (w: weights only, wa: and activations)
    bits: list[int] = Field(default_factory=lambda: [8, 6, 4, 3])
    granularity: list[Literal["tensor", "channel"]] = Field(
        default_factory=lambda: ["channel", "tensor"]
    )
    quant_schemes: list[Literal["w", "wa"]] = Field(default_factory=lambda: ["w", "wa"])
    activation_bits: int | None = Field(None, ge=2, le=16)  # for "wa"; None: the weight bits
    activation_calibration: Literal["minmax", "percentile"] = "minmax"
    activation_percentile: float = Field(99.99, gt=50, le=100)
    calibration_n: int = Field(32, ge=1)

    # attacks
    attack_norms: list[Literal["linf", "l2"]] = Field(default_factory=lambda: ["linf", "l2"])
    attack_n: int = Field(64, ge=1)  # test images attacked at x_t (a random subset per stream)
    attack_timesteps: list[int] = Field(default_factory=lambda: [100, 500])
    eps_linf: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
    eps_l2: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    pgd_steps: int = Field(20, ge=1)
    pgd_restarts: int = Field(1, ge=1)  # random restarts per eps (the best one counts)
    pgd_step_factor: float = Field(2.5, gt=0)  # step size = factor * eps / pgd_steps
    random_start: bool = True
    init_n: int = Field(32, ge=2)  # initial noises x_T attacked through DDIM
    init_sampling_steps: int = Field(5, ge=1)
    init_pgd_steps: int | None = Field(None, ge=1)  # None: pgd_steps (each one runs the sampler)
    init_eps_linf: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    init_eps_l2: list[float] = Field(default_factory=lambda: [0.2, 0.5, 1.0, 2.0, 4.0, 8.0])

    # weight noise: finer sigmas where a digits baseline degrades (between 0.1 and 0.5), and
    # 4 direction draws per sigma (one or two left the curve mostly draw noise; issue 18)
    noise_sigmas: list[float] = Field(
        default_factory=lambda: [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
    )
    noise_draws: int = Field(4, ge=1)

    @field_validator("granularity", "quant_schemes", "samplers", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("exposure_steps", mode="before")
    @classmethod
    def _one_int_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("eps_linf", "eps_l2", "init_eps_linf", "init_eps_l2", "noise_sigmas")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        return _sorted_eps(v)

    @field_validator("steps", "attack_timesteps", "exposure_steps")
    @classmethod
    def _positive_sorted(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise ValueError("must be >= 0")
        return sorted(set(v))

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: list[int]) -> list[int]:
        if any(not 2 <= b <= 16 for b in v):
            raise ValueError("bits must be in 2..16")
        return sorted(set(v), reverse=True)

    @field_validator("granularity", "quant_schemes", "samplers", "attack_norms")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _check(self) -> RobustnessSettings:
        if any(s < 1 for s in self.steps):
            raise ValueError("steps must be >= 1")
        if len(self.steps) < 2:
            raise ValueError("steps needs at least 2 values: the largest is the clean level")
        if any(s < 2 for s in self.exposure_steps) or not self.exposure_steps:
            raise ValueError("exposure_steps must be >= 2 (a gap needs two sampled timesteps)")
        if any(h is not None and h < 1 for h in self.variance_hops):
            raise ValueError("variance_hops must be >= 1 or null")
        return self

    def check_timesteps(self, timesteps: int, suites: list[str] | tuple[str, ...]) -> None:
        """ValueError when a setting the chosen suites use does not fit a T-step schedule."""
        bad_t = [t for t in self.attack_timesteps if t >= timesteps]
        if "attack" in suites and bad_t:
            raise ValueError(f"attack_timesteps {bad_t} outside 0..{timesteps - 1}")
        used = {self.eval_steps}
        used |= set(self.steps) if "steps" in suites else set()
        used |= set(self.exposure_steps) if "exposure" in suites else set()
        too_many = sorted(k for k in used if k > timesteps)
        if too_many:
            raise ValueError(f"sampling steps {too_many} exceed the schedule's {timesteps} "
                             "timesteps")

    def ladder_steps(self) -> tuple[int, list[int]]:
        """(clean T', ladder levels from many to few steps): the largest T' is the clean one."""
        return self.steps[-1], sorted(self.steps[:-1], reverse=True)

    def scheme_activation_bits(self, scheme: str, bits: int) -> int | None:
        """The activation bit width of a quant scheme at weight width `bits` (None: float)."""
        if scheme == "w":
            return None
        return self.activation_bits if self.activation_bits is not None else bits


SECTION = "robustness"  # the --set section: a study config's evaluations.robustness


def parse_settings(assignments: list[str], *, n_samples: int | None = None) -> RobustnessSettings:
    """RobustnessSettings from `robustness.KEY=VALUE` assignments (VALUE in YAML: bits=[8,4]),
    as `flatgen train --set section.key=value` writes them; ValueError with one line naming
    the key and the fix."""
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or section != SECTION or not dot or not name or "." in name:
            raise ValueError(f"--set takes {SECTION}.KEY=VALUE (e.g. {SECTION}.bits=[8,4]), "
                             f"got {item!r}")
        try:
            values[name] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: {raw!r} is not a YAML value") from None
    if n_samples is not None:
        values["n_samples"] = n_samples
    try:
        return RobustnessSettings(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix(
            "Value error, ")
        raise ValueError(f"invalid robustness setting: {SECTION}.{loc}: {msg} "
                         f"(write --set {SECTION}.KEY=VALUE, lists like {SECTION}.bits=[8,4])"
                         ) from None
