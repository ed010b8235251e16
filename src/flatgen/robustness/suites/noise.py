"""The weight-noise suite: sample quality under filter-normalized Gaussian weight noise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flatgen.robustness import keys
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites.base import SuiteContext, SuiteSummary
from flatgen.robustness.util import derive_seed
from flatgen.robustness.weight_noise import weight_noise_sweep


class NoiseSuite:
    """Result per model: weight_noise_sweep's dict, plus "select": the sweep on the selection
    stream (other sampling noise and noise directions; selection only)."""

    name = "noise"

    def ticks(self, settings: RobustnessSettings) -> int:
        return len(settings.noise_sigmas) * settings.noise_draws

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        out = self._sweep(ctx, "verdict")
        if ctx.selection:
            out["select"] = self._sweep(ctx, "select")
        return out

    def _sweep(self, ctx: SuiteContext, stream: str) -> dict[str, Any]:
        s = ctx.settings
        ctx.describe(f"{ctx.name}: weight noise")
        base = ctx.evaluate(stream=stream)  # first, so that the quality metric is resolved
        return weight_noise_sweep(
            ctx.model,
            lambda m: ctx.evaluate(m, stream=stream),
            s.noise_sigmas,
            s.noise_draws,
            seed=s.seed if stream == "verdict" else derive_seed(s.seed, stream),
            metric=ctx.metric,
            fraction=s.robust_fraction,
            baseline=base,
            tick=ctx.tick if stream == "verdict" else None,
        )

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        sel = result.get("select")
        ladder = keys.ladder_record(
            levels=result["sigma"][1:], clean=result["metric_mean"][0],
            values=result["metric_mean"][1:],
            select_clean=sel["metric_mean"][0] if sel else None,
            select_values=sel["metric_mean"][1:] if sel else None,
            metric=metric, level_name="sigma (relative, per filter)",
        )
        return SuiteSummary(
            ladders={keys.NOISE_WEIGHTS: ladder},
            robust={"weight_noise_sigma": result["robust_sigma"]},
            largest={"weight_noise_sigma": max(result["sigma"])},
        )

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_noise

        return [plot_noise(results, Path(out_dir) / "robustness_noise.png")]
