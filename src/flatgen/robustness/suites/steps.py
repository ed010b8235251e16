"""The steps suite: sample quality at each T', for the ADM sampler (which decides) and DDIM."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from flatgen import records as keys
from flatgen.robustness.record import ladder_record
from flatgen.robustness.suites.base import (
    ONE_OR_MANY,
    TIMESTEPS,
    UNIQUE,
    Sampler,
    Settings,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
    metric_of,
    stream_count,
)


def _a_ladder(steps: list[int]) -> list[int]:
    if any(s < 1 for s in steps):
        raise ValueError("steps must be >= 1")
    if len(steps) < 2:
        raise ValueError("steps needs at least 2 values: the largest is the clean level")
    return steps


class StepsSettings(SuiteSettings):
    """The steps ladder: the largest T' is the clean level, the others the ladder, many to few
    steps, for each sampler."""

    steps: Annotated[list[int], TIMESTEPS, AfterValidator(_a_ladder)] = Field(
        default_factory=lambda: [3, 5, 10, 20, 50, 100]
    )
    samplers: Annotated[list[Sampler], ONE_OR_MANY, UNIQUE] = Field(
        default_factory=lambda: ["adm", "ddim"]
    )

    def check_timesteps(self, timesteps: int) -> None:
        too_many = [k for k in self.steps if k > timesteps]
        if too_many:
            raise ValueError(f"sampling steps {too_many} exceed the schedule's {timesteps} "
                             "timesteps")

    def ladder_steps(self) -> tuple[int, list[int]]:
        """(clean T', ladder levels from many to few steps): the largest T' is the clean one."""
        return self.steps[-1], sorted(self.steps[:-1], reverse=True)


class StepsSuite:
    """Result per model: {sampler: {"steps": [T'...], "quality": [...], "select_quality": [...]
    (selection only)}}. Ladder steps_<sampler>: clean at the largest T', levels the others from
    many to few steps."""

    name = "steps"
    settings = StepsSettings

    def ticks(self, settings: Settings, *, selection: bool = False) -> int:
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
