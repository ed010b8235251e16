"""RobustnessSettings: the settings every robustness suite shares, and each registered suite's
own, in one flat pydantic model (a study config's evaluations.robustness, `--set robustness.*`).

How it is composed. A suite declares its settings where it is written: a SuiteSettings subclass
(flatgen.robustness.suites.base) with its fields, validators, defaults and timestep check, named
by the suite's `settings` class attribute. RobustnessSettings declares only the shared fields.
Its model validator (mode="wrap") reads the suites registry (SUITES) at every validation: each
registered suite's model validates the keys it declares (filling its defaults), and the values
join the shared fields as extra fields. So
- keys stay flat and read as before: `robustness.bits=[8,4]`, settings.bits, model_dump();
- a key that neither the shared fields nor a registered suite declares is refused as pydantic
  refuses one ("unknown key", naming it), and so is a key two of them declare;
- a suite registered for a while (SUITES.temporary) brings its keys for that while: no class is
  rebuilt, the registry is read again;
- model_fields_set holds the keys given, and model_dump(exclude_unset=True) writes only those
  (a study's snapshot, study.yaml, reloads to the same settings).
SuiteSettings.of(settings) gives a suite its part typed (StepsSettings.of(s).ladder_steps()).

Importing this module loads the suites, and so torch: the settings are composed from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from flatgen.robustness.suites import SUITES
from flatgen.robustness.suites.base import Sampler, SuiteSettings

# results.json has always listed the steps suite's fields before eval_steps: written in that
# order still, so that a study's results stay byte for byte the same
_WRITTEN_FIRST = ("seed", "n_samples", "batch_size", "metric", "robust_fraction", "steps",
                  "samplers")


def suite_settings() -> dict[str, type[SuiteSettings]]:
    """The registered suites' settings models by suite name, in registry order; TypeError where
    two of them (or one and the shared fields) declare the same key."""
    out: dict[str, type[SuiteSettings]] = {}
    owner = dict.fromkeys(RobustnessSettings.model_fields, "the shared settings")
    for name, suite in SUITES.items():
        model = getattr(suite, "settings", None)
        if model is None or model in out.values():
            continue
        for key in model.model_fields:
            if key in owner:
                raise TypeError(f"robustness setting {key!r} of suite {name!r} is already "
                                f"{owner[key]}'s")
            owner[key] = f"suite {name!r}"
        out[name] = model
    return out


class RobustnessSettings(BaseModel):
    """Sweep settings for run_robustness_suite; the defaults are the full ladders of issue 12.
    Besides the shared fields below, every registered suite's own (see the module docstring)."""

    model_config = ConfigDict(extra="allow")  # the suites' fields, validated by _compose

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
    eval_steps: int = Field(20, ge=1)  # sampler used for the quant and noise ladders
    eval_sampler: Sampler = "adm"

    @model_validator(mode="wrap")
    @classmethod
    def _compose(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> RobustnessSettings:
        if not isinstance(data, Mapping):
            return handler(data)  # an instance as it is; anything else refused by pydantic
        shared = dict(data)
        parts: dict[str, Any] = {}
        models = suite_settings()
        for model in models.values():
            given = {k: shared.pop(k) for k in model.model_fields if k in shared}
            parts |= dict(model.model_validate(given))  # a ValidationError keeps its key
        unknown = [k for k in shared if k not in cls.model_fields]
        if unknown:
            raise ValidationError.from_exception_data(cls.__name__, [
                {"type": "extra_forbidden", "loc": (k,), "input": shared[k]} for k in unknown])
        settings = handler(shared | parts)
        # pydantic counts every extra field as set: only the keys given were
        object.__setattr__(settings, "__pydantic_fields_set__", set(data))
        return settings

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler,
              info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if info.exclude_unset:  # pydantic writes extra fields whether set or not
            data = {k: v for k, v in data.items() if k in self.model_fields_set}
        return {k: data[k] for k in _WRITTEN_FIRST if k in data} | data

    def check_timesteps(self, timesteps: int, suites: list[str] | tuple[str, ...]) -> None:
        """ValueError when a setting the chosen suites use does not fit a T-step schedule: the
        evaluation T', then each chosen suite's own check (SuiteSettings.check_timesteps)."""
        if self.eval_steps > timesteps:
            raise ValueError(f"sampling steps [{self.eval_steps}] exceed the schedule's "
                             f"{timesteps} timesteps")
        models = suite_settings()
        for name in suites:
            if name in models:
                models[name].of(self).check_timesteps(timesteps)


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
