"""The weight-noise suite: sample quality under filter-normalized Gaussian weight noise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from flatgen import records as keys
from flatgen.robustness.suites.base import (
    MAGNITUDES,
    Settings,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
    legacy_robust,
    stream_count,
)
from flatgen.robustness.weight_noise import weight_noise_sweep


class NoiseSettings(SuiteSettings):
    """Finer sigmas where a digits baseline degrades (between 0.1 and 0.5), and 4 direction
    draws per sigma (one or two left the curve mostly draw noise; issue 18)."""

    noise_sigmas: Annotated[list[float], MAGNITUDES] = Field(
        default_factory=lambda: [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
    )
    noise_draws: int = Field(4, ge=1)


class NoiseSuite:
    """Result per model: weight_noise_sweep's ladder record (quality on the evaluation sampler;
    with selection, select_* on the selection stream with other noise directions)."""

    name = "noise"
    settings = NoiseSettings

    def ticks(self, settings: Settings, *, selection: bool = False) -> int:
        sigmas = [v for v in settings.noise_sigmas if v > 0]  # sigma 0 is the clean run
        return len(sigmas) * settings.noise_draws * stream_count(selection)

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        s = ctx.settings
        ctx.describe(f"{ctx.name}: weight noise")
        clean = ctx.evaluate()  # first, so that the quality metric is resolved
        select = {}
        if ctx.selection:
            select = {"select": True, "select_clean": ctx.evaluate(stream="select"),
                      "select_evaluate": lambda m: ctx.evaluate(m, stream="select")}
        return weight_noise_sweep(
            ctx.model, lambda m: ctx.evaluate(m), sigmas=s.noise_sigmas, draws=s.noise_draws,
            seed=s.seed, metric=ctx.metric, clean=clean, tick=ctx.tick, **select,
        )

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        summary = SuiteSummary(ladders={keys.NOISE_WEIGHTS: dict(result)})
        legacy_robust(summary, "weight_noise_sigma", result, fraction=0.5)
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_noise

        return [plot_noise(results, Path(out_dir) / "robustness_noise.png")]
