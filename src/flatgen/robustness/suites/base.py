"""What a robustness suite is (Suite), the settings it declares (SuiteSettings), what it gets
(SuiteContext) and what it gives back (SuiteSummary). The context shares the unperturbed model's
runs between suites: the steps ladder's T'=20 ADM run is the quantization ladder's float quality
and the exposure gap's sampling-time eps norms, on each noise stream."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.exposure import EpsNormRecorder
from flatgen.robustness.steps import generate, generate_streams

if TYPE_CHECKING:  # typing.Self is 3.11+; flatgen supports 3.10
    from typing_extensions import Self

# What a suite is given: a flatgen.robustness.settings.RobustnessSettings, the shared fields and
# every registered suite's own, flat (settings.seed, settings.bits). Named here, not imported:
# RobustnessSettings is composed from the suites registry, which sits above this module.
Settings = Any
Sampler = Literal["adm", "ddim"]


def _sorted_at_least_0(message: str) -> AfterValidator:
    def check(v: list) -> list:
        if any(x < 0 for x in v):
            raise ValueError(message)
        return sorted(set(v))

    return AfterValidator(check)


# reusable field validators of suite settings (Annotated[list[...], ONE_OR_MANY, UNIQUE])
ONE_OR_MANY = BeforeValidator(lambda v: [v] if isinstance(v, str) else v)  # granularity=tensor
UNIQUE = AfterValidator(lambda v: list(dict.fromkeys(v)))  # each choice once, in the order given
TIMESTEPS = _sorted_at_least_0("must be >= 0")  # T' and t lists: each once, ascending
MAGNITUDES = _sorted_at_least_0("epsilons and sigmas must be >= 0")  # eps, sigma ladders: same


class SuiteSettings(BaseModel):
    """A suite's own settings: a subclass with its fields, validators and defaults, named by the
    suite's `settings` class attribute. RobustnessSettings holds every registered suite's fields
    flat (`robustness.bits=[8,4]`, settings.bits); a suite without settings leaves it out."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """This suite's part of the flat settings, typed (its values are validated already)."""
        return cls.model_construct(**{k: getattr(settings, k) for k in cls.model_fields})

    def check_timesteps(self, timesteps: int) -> None:
        """ValueError when a setting does not fit a T-step schedule (checked before a study
        trains); by default there is nothing to check."""


@dataclass
class SuiteSummary:
    """One model's headline numbers from one suite.

    scalars: flat metric keys -> number (flatgen.records names them);
    ladders: ladder id -> ladder record (flatgen.ladder documents the record);
    robust / largest: robust strength per sweep and the strongest perturbation tried (None in
    robust: never degraded within the sweep).
    """

    scalars: dict[str, float | None] = field(default_factory=dict)
    ladders: dict[str, dict[str, Any]] = field(default_factory=dict)
    robust: dict[str, float | None] = field(default_factory=dict)
    largest: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Suite(Protocol):
    """A robustness suite: register an instance in flatgen.robustness.suites.SUITES. Its
    settings, if it has any, are a SuiteSettings subclass named by a `settings` class attribute
    (optional, so not a member of this protocol)."""

    name: str

    def ticks(self, settings: Settings) -> int:
        """How many progress ticks run() takes per model. A suite that measures the selection
        stream may take a keyword `selection` (bool) and count those runs too (suite_ticks)."""
        ...

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        """Measure one model (ctx.model); JSON-ready results."""
        ...

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        """Flat numbers and ladder records from one model's run() result."""
        ...

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """PNGs from the whole suite output (results[self.name] holds model -> run() result)."""
        ...


def stream_count(selection: bool) -> int:
    """How many noise streams a suite measures: the verdict one, and the selection one."""
    return 2 if selection else 1


def suite_ticks(suite: Suite, settings: Settings, *, selection: bool) -> int:
    """suite.ticks(settings, selection=...) where the suite counts selection runs, else
    suite.ticks(settings) (a suite that ignores the selection stream)."""
    import inspect

    if "selection" in inspect.signature(suite.ticks).parameters:
        return suite.ticks(settings, selection=selection)
    return suite.ticks(settings)


@dataclass
class CleanRun:
    """One generation of the unperturbed model: its quality and the eps norms it visited."""

    quality: dict[str, Any]
    eps_norms: EpsNormRecorder


@dataclass
class SuiteContext:
    """What a suite measures one model with. Every model of a suite run sees the same x_T and
    sampler noise per (stream, sampler, T'), so models differ only by their weights."""

    name: str  # the weights name (raw, ema, ...)
    model: nn.Module
    schedule: NoiseSchedule
    reference: torch.Tensor  # the test set, on the model's device
    shape: tuple[int, ...]
    n: int  # samples per quality evaluation
    settings: Settings
    quality: Callable[[torch.Tensor], dict[str, Any]]
    selection: bool = False  # also measure ladders on the separate selection stream
    tick: Callable[[], None] = lambda: None
    describe: Callable[[str], None] = lambda text: None
    _runs: dict[tuple[str, str, int], CleanRun] = field(default_factory=dict)

    @property
    def metric(self) -> str | None:
        """The quality key the ladders use (resolved on the first quality evaluation)."""
        return getattr(self.quality, "metric", self.settings.metric)

    @property
    def streams(self) -> tuple[str, ...]:
        """The noise streams ladders are measured on: the verdict one, and the selection one
        when asked."""
        return ("verdict", "select") if self.selection else ("verdict",)

    def generate(
        self, model: nn.Module | None = None, *, sampler: str, steps: int, stream: str = "verdict",
        on_step: Callable[[Any], None] | None = None,
    ) -> torch.Tensor:
        """ctx.n samples of `model` (default: the unperturbed one) on one noise stream."""
        s = self.settings
        return generate(
            self.model if model is None else model, self.schedule, shape=self.shape, n=self.n,
            steps=steps, sampler=sampler, seed=s.seed, stream=stream, batch_size=s.batch_size,
            on_step=on_step,
        )

    def clean_run(self, *, sampler: str, steps: int, stream: str = "verdict") -> CleanRun:
        """The unperturbed model's run at (sampler, T', stream), generated once per context."""
        key = (stream, sampler, steps)
        if key not in self._runs:
            recorder = EpsNormRecorder()
            samples = self.generate(sampler=sampler, steps=steps, stream=stream, on_step=recorder)
            self._runs[key] = CleanRun(self.quality(samples), recorder)
        return self._runs[key]

    def clean_runs(self, *, sampler: str, steps: int) -> dict[str, CleanRun]:
        """clean_run on every stream (self.streams); the DDIM runs not made yet are sampled in
        one stacked call (generate_streams: the same x_T per stream, float rounding apart)."""
        missing = [st for st in self.streams if (st, sampler, steps) not in self._runs]
        if sampler == "ddim" and len(missing) > 1:
            recorders = {st: EpsNormRecorder() for st in missing}
            samples = generate_streams(
                self.model, self.schedule, shape=self.shape, n=self.n, steps=steps,
                streams=missing, seed=self.settings.seed, batch_size=self.settings.batch_size,
                on_step=recorders,
            )
            for st in missing:
                self._runs[(st, sampler, steps)] = CleanRun(self.quality(samples[st]),
                                                            recorders[st])
        return {st: self.clean_run(sampler=sampler, steps=steps, stream=st)
                for st in self.streams}

    def evaluate(self, model: nn.Module | None = None, *, stream: str = "verdict") -> dict:
        """Quality of a (perturbed) model on the evaluation sampler and T' (settings.eval_*);
        the unperturbed model's comes from the shared clean run."""
        s = self.settings
        if model is None or model is self.model:
            return self.clean_run(sampler=s.eval_sampler, steps=s.eval_steps, stream=stream).quality
        samples = self.generate(model, sampler=s.eval_sampler, steps=s.eval_steps, stream=stream)
        return self.quality(samples)


def metric_of(quality: Mapping[str, Any], metric: str) -> float | None:
    """One metric from a quality dict (None where it is missing or not finite)."""
    value = quality.get(metric)
    return None if value is None else float(value)


def legacy_robust(
    summary: SuiteSummary, name: str, record: Mapping[str, Any], *, fraction: float
) -> None:
    """The former robust strength of one sweep (the level where the score first exceeds
    (1 + fraction) x the model's own clean score; None: never within the sweep) into
    summary.robust / .largest. Kept for the robust_eps_* keys of older reports: claims use the
    ladders with one threshold shared by all models."""
    from flatgen.ladder import first_crossing

    threshold = record["clean"] * (1 + fraction)
    level, censored = first_crossing(record["levels"], record["values"], threshold,
                                     clean=record["clean"])
    summary.robust[name] = None if censored else level
    summary.largest[name] = max(record["levels"])
