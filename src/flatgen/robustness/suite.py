"""The robustness suite: steps (+ exposure bias), quantization, attacks and weight noise, run on
one or more weight sets of a model (e.g. raw / EMA / SWA) with common random numbers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness._util import jsonable, make_generator, model_device
from flatgen.robustness.attacks import attack_denoiser_input, attack_initial_noise
from flatgen.robustness.exposure import (
    EpsNormRecorder,
    gap_report,
    training_eps_norms,
    variance_error,
)
from flatgen.robustness.quantize import calibration_inputs, quantization_sweep
from flatgen.robustness.steps import generate, steps_sweep
from flatgen.robustness.weight_noise import metric_value, weight_noise_sweep

SUITES = ("steps", "quant", "attack", "noise")
Sampler = Literal["adm", "ddim"]


def _sorted_eps(v: list[float]) -> list[float]:
    if any(e < 0 for e in v):
        raise ValueError("epsilons and sigmas must be >= 0")
    return sorted(set(v))


class RobustnessSettings(BaseModel):
    """Sweep settings for run_robustness_suite; defaults run in minutes on 2 CPU cores."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_samples: int | None = Field(128, ge=2)  # generated samples per evaluation; None: floor size
    batch_size: int = Field(256, ge=1)
    # the quality key that curves and robust epsilons use (lower is better); None: digits_fid
    # where the quality function reports it (it reacts far more than W2 on digits), else w2
    metric: str | None = None
    robust_fraction: float = Field(0.5, gt=0)  # "degraded" = metric up by this fraction

    # steps + exposure bias
    steps: list[int] = [5, 10, 20, 50, 100]
    samplers: list[Sampler] = ["adm", "ddim"]
    eval_steps: int = Field(20, ge=1)  # sampler used for the quant and noise sweeps
    eval_sampler: Sampler = "adm"
    exposure_steps: int = Field(20, ge=2)
    exposure_sampler: Sampler = "adm"
    variance_hops: list[int | None] = [1, None]  # None: chains from the top timestep

    # quantization
    bits: list[int] = [8, 6, 4, 3]
    granularity: list[Literal["tensor", "channel"]] = ["channel", "tensor"]
    activation_bits: int | None = Field(None, ge=2, le=16)  # also quantize layer inputs
    activation_calibration: Literal["minmax", "percentile"] = "minmax"
    activation_percentile: float = Field(99.99, gt=50, le=100)
    calibration_n: int = Field(32, ge=1)

    # attacks
    attack_norms: list[Literal["linf", "l2"]] = ["linf", "l2"]
    attack_n: int = Field(64, ge=1)  # test images attacked at the denoiser input
    attack_timesteps: list[int] = [100, 500]
    eps_linf: list[float] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    eps_l2: list[float] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
    pgd_steps: int = Field(5, ge=1)
    pgd_step_factor: float = Field(2.5, gt=0)  # step size = factor * eps / pgd_steps
    random_start: bool = True
    init_n: int = Field(32, ge=2)  # initial noises x_T attacked through DDIM
    init_sampling_steps: int = Field(5, ge=1)
    init_eps_linf: list[float] = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    init_eps_l2: list[float] = [0.2, 0.5, 1.0, 2.0, 4.0, 8.0]

    # weight noise
    noise_sigmas: list[float] = [0.02, 0.05, 0.1, 0.2, 0.5]
    noise_draws: int = Field(2, ge=1)

    @field_validator("granularity", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("eps_linf", "eps_l2", "init_eps_linf", "init_eps_l2", "noise_sigmas")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        return _sorted_eps(v)

    @field_validator("steps", "attack_timesteps")
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

    @model_validator(mode="after")
    def _check(self) -> RobustnessSettings:
        if any(s < 1 for s in self.steps):
            raise ValueError("steps must be >= 1")
        if any(h is not None and h < 1 for h in self.variance_hops):
            raise ValueError("variance_hops must be >= 1 or null")
        return self


def _default_quality_fn(
    reference: torch.Tensor, floor_reference: torch.Tensor
) -> Callable[[torch.Tensor], dict[str, Any]]:
    from flatgen.metrics import quality_report  # lazy: metrics pulls in the classifier

    def quality(samples: torch.Tensor) -> dict[str, Any]:
        if len(samples) > len(floor_reference):
            raise ValueError(
                f"{len(samples)} samples but only {len(floor_reference)} floor_reference rows"
            )
        # floor_reference is already a random draw, so its first rows are one too
        return quality_report(samples, reference, floor_reference[: len(samples)])

    return quality


class _Quality:
    """quality_fn made JSON-ready; picks the headline metric on its first call when unset."""

    PREFERRED = ("digits_fid", "w2", "quality")

    def __init__(self, fn: Callable[[torch.Tensor], Any], metric: str | None):
        self.fn, self.metric = fn, metric

    def __call__(self, samples: torch.Tensor) -> dict[str, Any]:
        value = self.fn(samples.detach().cpu())
        if not isinstance(value, Mapping):
            value = {self.metric or "quality": value}
        if self.metric is None:
            self.metric = next((k for k in self.PREFERRED if k in value), None)
            if self.metric is None:
                raise KeyError(f"set settings.metric: none of {self.PREFERRED} in {list(value)}")
        if self.metric not in value:  # fail on the first evaluation, not after the whole suite
            raise KeyError(f"quality_fn gave no {self.metric!r} (keys: {', '.join(value)})")
        return jsonable(dict(value))


def _check_inputs(
    models: Mapping[str, nn.Module],
    schedule: NoiseSchedule,
    reference: torch.Tensor,
    suites: Sequence[str],
    settings: RobustnessSettings,
) -> None:
    if not models:
        raise ValueError("no models given")
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES)}")
    bad_t = [t for t in settings.attack_timesteps if t >= schedule.timesteps]
    if bad_t:
        raise ValueError(f"attack_timesteps {bad_t} outside 0..{schedule.timesteps - 1}")
    too_many = [s for s in settings.steps if s > schedule.timesteps]
    if too_many:
        raise ValueError(f"steps {too_many} exceed the schedule's {schedule.timesteps} timesteps")
    if reference.shape[0] < 2:
        raise ValueError("reference needs at least 2 samples")


def _ticks(suite: str, s: RobustnessSettings) -> int:
    if suite == "steps":
        return len(s.samplers) * len(s.steps) + 1 + len(s.variance_hops)
    if suite == "quant":
        return len(s.bits) * len(s.granularity) * (2 if s.activation_bits else 1)
    if suite == "attack":
        per_norm = [
            len(s.attack_timesteps) * (len(_eps_for(s, n)) + 1) + len(_init_eps_for(s, n)) + 1
            for n in s.attack_norms
        ]
        return sum(per_norm)
    return len(s.noise_sigmas) * s.noise_draws


def _eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.eps_linf if norm == "linf" else s.eps_l2) if e > 0]


def _init_eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.init_eps_linf if norm == "linf" else s.init_eps_l2) if e > 0]


def run_robustness_suite(
    models: Mapping[str, nn.Module],
    schedule: NoiseSchedule,
    reference: torch.Tensor,
    floor_reference: torch.Tensor,
    suites: Sequence[str] = SUITES,
    settings: RobustnessSettings | None = None,
    quality_fn: Callable[[torch.Tensor], Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the chosen suites on every model (weights name -> denoiser net(x, t) -> eps).

    reference: the test set; floor_reference: an equal-size draw from the train set (the
    quality floor). quality_fn(samples) -> dict of metrics (or a float, stored under
    settings.metric or "quality"); default flatgen.metrics.quality_report against
    reference/floor.
    Every model sees the same x_T, sampler noise, attack starts and weight-noise directions.
    Returns plain JSON-ready data; "timing_s" is the only part that varies between runs.
    """
    from flatgen.progress import make_progress

    settings = settings or RobustnessSettings()
    if set(suites) <= set(SUITES):
        suites = [name for name in SUITES if name in suites]  # canonical order
    _check_inputs(models, schedule, reference, suites, settings)
    s = settings
    shape = tuple(reference.shape[1:])
    n = s.n_samples or len(floor_reference)
    if quality_fn is None:
        if n > len(floor_reference):
            raise ValueError(
                f"n_samples {n} exceeds the {len(floor_reference)} floor_reference rows"
            )
        quality_fn = _default_quality_fn(reference, floor_reference)
    quality = _Quality(quality_fn, s.metric)

    results: dict[str, Any] = {
        "settings": s.model_dump(mode="json"),
        "suites": list(suites),
        "models": list(models),
        "metric": s.metric,  # resolved below when settings.metric is None
        "n_samples": n,
        "sample_shape": list(shape),
        **{suite: {} for suite in suites},
        "timing_s": {},
    }
    if "steps" in suites:
        results["exposure"] = {}

    total = len(models) * sum(_ticks(x, s) for x in suites)
    with make_progress(progress) as bar:
        task = bar.add_task("robustness", total=total) if bar is not None else None

        def tick() -> None:
            if bar is not None:
                bar.advance(task)

        def describe(text: str) -> None:
            if bar is not None:
                bar.update(task, description=text)

        for name, model in models.items():
            ref = reference.to(model_device(model))
            timing: dict[str, float] = {}
            baseline: dict[str, Any] = {}

            def evaluate(m: nn.Module) -> dict[str, Any]:
                return quality(
                    generate(
                        m, schedule, shape, n, s.eval_steps, s.eval_sampler, s.seed, s.batch_size
                    )
                )

            def base_quality(model: nn.Module = model, baseline: dict = baseline) -> dict:
                if "q" not in baseline:
                    baseline["q"] = evaluate(model)
                return baseline["q"]

            if "steps" in suites:
                describe(f"{name}: steps")
                t0 = time.perf_counter()
                recorder = EpsNormRecorder()
                sweep = steps_sweep(
                    model,
                    schedule,
                    quality,
                    shape,
                    n,
                    s.steps,
                    s.samplers,
                    s.seed,
                    s.batch_size,
                    {(s.exposure_sampler, s.exposure_steps): recorder},
                    tick,
                )
                results["steps"][name] = sweep
                if s.eval_sampler in sweep and s.eval_steps in sweep[s.eval_sampler]["steps"]:
                    rows = sweep[s.eval_sampler]
                    baseline["q"] = rows["quality"][rows["steps"].index(s.eval_steps)]
                describe(f"{name}: exposure bias")
                results["exposure"][name] = _exposure(
                    model, schedule, ref, shape, n, s, recorder, tick
                )
                timing["steps"] = time.perf_counter() - t0

            if "quant" in suites:
                describe(f"{name}: quantization")
                t0 = time.perf_counter()
                calib = None
                if s.activation_bits is not None:
                    calib = calibration_inputs(
                        model,
                        schedule,
                        shape,
                        s.calibration_n,
                        s.eval_steps,
                        s.eval_sampler,
                        make_generator(s.seed, "calibration"),
                    )
                out: dict[str, Any] = {"float": base_quality()}
                for gran in s.granularity:
                    out[gran] = quantization_sweep(
                        model,
                        evaluate,
                        s.bits,
                        gran,
                        s.activation_bits,
                        calib,
                        s.activation_calibration,
                        s.activation_percentile,
                        tick,
                    )
                results["quant"][name] = out
                timing["quant"] = time.perf_counter() - t0

            if "attack" in suites:
                describe(f"{name}: attacks")
                t0 = time.perf_counter()
                results["attack"][name] = _attacks(model, schedule, ref, shape, s, tick)
                timing["attack"] = time.perf_counter() - t0

            if "noise" in suites:
                describe(f"{name}: weight noise")
                t0 = time.perf_counter()
                base = base_quality()  # first, so that quality.metric is resolved
                results["noise"][name] = weight_noise_sweep(
                    model,
                    evaluate,
                    s.noise_sigmas,
                    s.noise_draws,
                    seed=s.seed,
                    metric=quality.metric,
                    fraction=s.robust_fraction,
                    baseline=base,
                    tick=tick,
                )
                timing["noise"] = time.perf_counter() - t0
            results["timing_s"][name] = timing
        describe("robustness: done")
    results["metric"] = quality.metric
    results["summary"] = summarize(results)
    return jsonable(results)


def _exposure(
    model: nn.Module,
    schedule: NoiseSchedule,
    ref: torch.Tensor,
    shape: tuple[int, ...],
    n: int,
    s: RobustnessSettings,
    recorder: EpsNormRecorder,
    tick: Callable[[], None],
) -> dict[str, Any]:
    if not recorder.sums:  # the steps sweep did not include the exposure sampler/steps
        generate(
            model,
            schedule,
            shape,
            n,
            s.exposure_steps,
            s.exposure_sampler,
            s.seed,
            s.batch_size,
            on_step=recorder,
        )
    sampling = recorder.means()
    training = training_eps_norms(model, schedule, ref, list(sampling), s.seed, s.batch_size)
    tick()
    gap = {
        "steps": s.exposure_steps,
        "sampler": s.exposure_sampler,
        "n": n,
        **gap_report(sampling, training),
    }
    variance = {}
    for hop in s.variance_hops:
        variance["full" if hop is None else f"hop{hop}"] = variance_error(
            model,
            schedule,
            ref,
            s.exposure_steps,
            s.exposure_sampler,
            hop,
            s.seed,
            batch_size=s.batch_size,
        )
        tick()
    return {"eps_norm_gap": gap, "variance_error": variance}


def _attacks(
    model: nn.Module,
    schedule: NoiseSchedule,
    ref: torch.Tensor,
    shape: tuple[int, ...],
    s: RobustnessSettings,
    tick: Callable[[], None],
) -> dict[str, Any]:
    x0 = ref[: s.attack_n]
    g = make_generator(s.seed, "init-attack-x_T")
    x_T = torch.randn((s.init_n, *shape), generator=g).to(ref.device, ref.dtype)
    denoiser: dict[str, Any] = {}
    init: dict[str, Any] = {}
    for norm in s.attack_norms:
        denoiser[norm] = {
            str(t): attack_denoiser_input(
                model,
                schedule,
                x0,
                t,
                _eps_for(s, norm),
                norm,
                s.pgd_steps,
                s.pgd_step_factor,
                s.random_start,
                s.seed,
                s.batch_size,
                s.robust_fraction,
                tick,
            )
            for t in s.attack_timesteps
        }
        init[norm] = attack_initial_noise(
            model,
            schedule,
            x_T,
            _init_eps_for(s, norm),
            norm,
            sampling_steps=s.init_sampling_steps,
            steps=s.pgd_steps,
            step_factor=s.pgd_step_factor,
            random_start=s.random_start,
            seed=s.seed,
            fraction=s.robust_fraction,
            batch_size=s.batch_size,
            tick=tick,
        )
    return {"denoiser_input": denoiser, "initial_noise": init}


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers per model, and robust-epsilon ratios against the first model
    (robust_epsilon_ratio_vs_<first> > 1: that model needs a stronger attack or more noise
    to degrade; None where either model never degraded within its sweep)."""
    metric = results["metric"]
    out: dict[str, Any] = {}
    for name in results["models"]:
        row: dict[str, Any] = {}
        if name in results.get("steps", {}):
            for sampler, rows in results["steps"][name].items():
                for k, q in zip(rows["steps"], rows["quality"], strict=True):
                    row[f"{metric}@{sampler}{k}"] = metric_value(q, metric)
            exp = results["exposure"][name]
            row["eps_norm_gap_mean"] = exp["eps_norm_gap"]["gap_mean"]
            for key, v in exp["variance_error"].items():
                row[f"delta_mean_{key}"] = v["delta_mean"]
        if name in results.get("quant", {}):
            for gran, sweep in results["quant"][name].items():
                if gran == "float":
                    continue
                for b, q in zip(sweep["bits"], sweep["quality"], strict=True):
                    row[f"{metric}@w{b}-{gran}"] = metric_value(q, metric)
        robust: dict[str, Any] = {}
        largest: dict[str, float] = {}  # the strongest perturbation tried: None above means "more than this"
        if name in results.get("attack", {}):
            att = results["attack"][name]
            for norm, per_t in att["denoiser_input"].items():
                for t, r in per_t.items():
                    robust[f"denoiser_{norm}_t{t}"] = r["robust_epsilon"]
                    largest[f"denoiser_{norm}_t{t}"] = max(r["eps"])
            for norm, r in att["initial_noise"].items():
                robust[f"initial_noise_{norm}"] = r["robust_epsilon"]
                largest[f"initial_noise_{norm}"] = max(r["eps"])
        if name in results.get("noise", {}):
            robust["weight_noise_sigma"] = results["noise"][name]["robust_sigma"]
            largest["weight_noise_sigma"] = max(results["noise"][name]["sigma"])
        row["robust_epsilon"] = robust
        row["robust_epsilon_largest_tried"] = largest
        out[name] = row
    names = list(results["models"])
    if len(names) > 1:
        first = out[names[0]]["robust_epsilon"]
        for name in names[1:]:
            out[name]["robust_epsilon_ratio_vs_" + names[0]] = {
                k: (v / first[k] if v is not None and first.get(k) else None)
                for k, v in out[name]["robust_epsilon"].items()
            }
    return out
