"""The steps suite: sample quality at each T', for the ADM sampler (which decides) and DDIM."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flatgen import records as keys
from flatgen.robustness.record import ladder_record
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites.base import SuiteContext, SuiteSummary, metric_of, stream_count


class StepsSuite:
    """Result per model: {sampler: {"steps": [T'...], "quality": [...], "select_quality": [...]
    (selection only)}}. Ladder steps_<sampler>: clean at the largest T', levels the others from
    many to few steps."""

    name = "steps"

    def ticks(self, settings: RobustnessSettings, *, selection: bool = False) -> int:
        return len(settings.samplers) * len(settings.steps) * stream_count(selection)

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sampler in ctx.settings.samplers:
            rows: dict[str, list] = {"steps": [], "quality": []}
            if ctx.selection:
                rows["select_quality"] = []
            for steps in ctx.settings.steps:
                ctx.describe(f"{ctx.name}: {sampler} T'={steps}")
                runs = ctx.clean_runs(sampler=sampler, steps=steps)  # DDIM: streams stacked
                rows["steps"].append(steps)
                rows["quality"].append(runs["verdict"].quality)
                if ctx.selection:
                    rows["select_quality"].append(runs["select"].quality)
                for _ in runs:
                    ctx.tick()
            out[sampler] = rows
        return out

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        summary = SuiteSummary()
        for sampler, rows in result.items():
            by_steps = dict(zip(rows["steps"], rows["quality"], strict=True))
            for k, q in by_steps.items():
                summary.scalars[keys.steps_quality_key(metric, sampler, k)] = metric_of(q, metric)
            clean_steps = max(by_steps)
            levels = sorted((k for k in by_steps if k != clean_steps), reverse=True)
            sel = None
            if rows.get("select_quality") is not None:
                select = dict(zip(rows["steps"], rows["select_quality"], strict=True))
                sel = (metric_of(select[clean_steps], metric),
                       [metric_of(select[k], metric) for k in levels])
            summary.ladders[keys.steps_ladder_id(sampler)] = ladder_record(
                levels=levels,
                clean=metric_of(by_steps[clean_steps], metric),
                values=[metric_of(by_steps[k], metric) for k in levels],
                select=sel,
                metric=metric,
                level_name="sampling steps T'",
                extra={"clean_level": clean_steps, "sampler": sampler},
            )
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_steps

        return [plot_steps(results, Path(out_dir) / "robustness_steps.png")]
