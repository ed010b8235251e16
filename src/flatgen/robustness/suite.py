"""run_robustness_suite: the registered suites (steps, exposure, quantization, attacks, weight
noise, ...) on one or more weight sets of a model (e.g. raw / EMA / SWA), with common random
numbers, and their headline numbers and ladder records."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.records import LADDERS, METRIC_NOTE
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites import SUITES, SuiteContext
from flatgen.robustness.suites.base import suite_ticks
from flatgen.robustness.util import jsonable, model_device


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
    settings.check_timesteps(schedule.timesteps, suites)
    if reference.shape[0] < 2:
        raise ValueError("reference needs at least 2 samples")


def run_robustness_suite(
    models: Mapping[str, nn.Module],
    schedule: NoiseSchedule,
    reference: torch.Tensor,
    *,
    floor_reference: torch.Tensor,
    suites: Sequence[str] | None = None,
    settings: RobustnessSettings | None = None,
    quality_fn: Callable[[torch.Tensor], Any] | None = None,
    selection: bool = False,
    progress: bool = True,
    inception_weights: str | Path | None = None,
) -> dict[str, Any]:
    """Run the chosen suites (default: every registered one) on every model (weights name ->
    denoiser net(x, t) -> eps).

    reference: the test set; floor_reference: an equal-size draw from the train set (the
    quality floor). quality_fn(samples) -> dict of metrics (or a float, stored under
    settings.metric or "quality"); default flatgen.metrics.quality_report against
    reference/floor, scored as flatgen.metrics.ladder_quality chooses (Inception FID on RGB
    data with inception_weights; "metric_note" says "pixel W2: cannot rank" where images are
    scored with W2). selection=True also measures every ladder on the separate selection noise
    stream (select_clean / select_values of the ladder records).
    Every model sees the same x_T, sampler noise, attacked test images, attack starts and
    weight-noise directions: all are drawn from settings.seed (set it per training seed: common
    to the models of a seed, new across seeds), the selection stream's apart from the verdict's.
    Returns plain JSON-ready data: per suite, model -> its result; "summary": model -> flat
    numbers; "ladders": model -> {ladder id: record}. "timing_s" is the only part that varies
    between runs.
    """
    from flatgen.progress import make_progress

    s = settings or RobustnessSettings()
    suites = [name for name in SUITES if name in set(suites or SUITES)] + [
        name for name in (suites or []) if name not in SUITES  # unknown: _check_inputs says so
    ]
    _check_inputs(models, schedule, reference, suites, s)
    shape = tuple(reference.shape[1:])
    n = s.n_samples or len(floor_reference)
    metric = s.metric
    if quality_fn is None:
        if n > len(floor_reference):
            raise ValueError(
                f"n_samples {n} exceeds the {len(floor_reference)} floor_reference rows"
            )
        from flatgen.metrics import ladder_quality  # lazy: metrics pulls in the classifier

        chosen = ladder_quality(reference, floor_reference, inception_weights=inception_weights)
        quality_fn, metric = chosen.fn, s.metric or chosen.metric
    quality = _Quality(quality_fn, metric)
    results: dict[str, Any] = {
        "settings": s.model_dump(mode="json"),
        "suites": list(suites),
        "models": list(models),
        "metric": s.metric,  # resolved below when settings.metric is None
        "n_samples": n,
        "sample_shape": list(shape),
        "selection": selection,
        **{suite: {} for suite in suites},
        "timing_s": {},
    }
    total = len(models) * sum(suite_ticks(SUITES[x], s, selection=selection) for x in suites)
    with make_progress(progress) as bar:
        task = bar.add_task("robustness", total=total) if bar is not None else None

        def tick() -> None:
            if bar is not None:
                bar.advance(task)

        def describe(text: str) -> None:
            if bar is not None:
                bar.update(task, description=text)

        for name, model in models.items():
            ctx = SuiteContext(
                name=name, model=model, schedule=schedule,
                reference=reference.to(model_device(model)), shape=shape, n=n, settings=s,
                quality=quality, selection=selection, tick=tick, describe=describe,
            )
            timing: dict[str, float] = {}
            for suite in suites:
                t0 = time.perf_counter()
                results[suite][name] = jsonable(SUITES[suite].run(ctx))
                timing[suite] = time.perf_counter() - t0
            results["timing_s"][name] = timing
        describe("robustness: done")
    from flatgen.metrics import metric_note

    results["metric"] = quality.metric
    results[METRIC_NOTE] = note = metric_note(reference, quality.metric)
    results |= summarize(results)
    for records in results[LADDERS].values():  # each quality ladder says it cannot rank
        for record in records.values():
            if note is not None and record["metric"] == quality.metric:
                record["extra"][METRIC_NOTE] = note
    return jsonable(results)


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """{"summary": model -> flat numbers, "ladders": model -> {ladder id: record}}.

    The summary row holds every suite's scalars, "robust_epsilon" (robust strength per sweep;
    None: never degraded within it), "robust_epsilon_largest_tried", and, for every model after
    the first, "robust_epsilon_ratio_vs_<first>" (> 1: that model needs a stronger attack or
    more noise to degrade; None where either model never degraded).
    """
    metric = results["metric"] or "quality"
    summary: dict[str, Any] = {}
    ladders: dict[str, Any] = {}
    for name in results["models"]:
        row: dict[str, Any] = {}
        robust: dict[str, Any] = {}
        largest: dict[str, float] = {}
        ladders[name] = {}
        for suite in results["suites"]:
            if name not in results.get(suite, {}):
                continue
            part = SUITES[suite].summarize(results[suite][name], metric=metric)
            row |= part.scalars
            robust |= part.robust
            largest |= part.largest
            ladders[name] |= part.ladders
        row["robust_epsilon"] = robust
        row["robust_epsilon_largest_tried"] = largest
        summary[name] = row
    names = list(results["models"])
    first = summary[names[0]]["robust_epsilon"]
    for name in names[1:]:
        summary[name]["robust_epsilon_ratio_vs_" + names[0]] = {
            k: (v / first[k] if v is not None and first.get(k) else None)
            for k, v in summary[name]["robust_epsilon"].items()
        }
    return {"summary": summary, LADDERS: ladders}


def plot_robustness(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Each suite present in results writes its PNG(s) into out_dir; returns their paths."""
    paths: list[Path] = []
    for suite in results.get("suites", []):
        if results.get(suite) and suite in SUITES:
            paths += SUITES[suite].plot(results, Path(out_dir))
    return paths
