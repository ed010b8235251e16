"""The exposure suite: the eps-norm gap between sampling and training inputs at each T' of
settings.exposure_steps (both norm forms), the part the sampler alone causes (exact for
Gaussian data with the test set's mean and full covariance), and the variance error delta_t."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from flatgen import records as keys
from flatgen.robustness.exposure import gap_forms, training_eps_norms, variance_error
from flatgen.robustness.gaussian import data_covariance, sampler_only_gap
from flatgen.robustness.suites.base import (
    TIMESTEPS,
    Sampler,
    Settings,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
)


def _gap_steps(steps: list[int]) -> list[int]:
    if any(s < 2 for s in steps) or not steps:
        raise ValueError("exposure_steps must be >= 2 (a gap needs two sampled timesteps)")
    return steps


def _hops(hops: list[int | None]) -> list[int | None]:
    if any(h is not None and h < 1 for h in hops):
        raise ValueError("variance_hops must be >= 1 or null")
    return hops


class ExposureSettings(SuiteSettings):
    """The eps-norm gap at each of these T' (the runs are shared with the steps ladder when it
    has them), the variance error delta_t at the largest."""

    exposure_steps: Annotated[
        list[int], BeforeValidator(lambda v: [v] if isinstance(v, int) else v), TIMESTEPS,
        AfterValidator(_gap_steps),
    ] = Field(default_factory=lambda: [10, 20])
    exposure_sampler: Sampler = "adm"
    # hops of the variance error: 1 (one sampler step) or None (from the top)
    variance_hops: Annotated[list[int | None], AfterValidator(_hops)] = Field(
        default_factory=lambda: [1, None]
    )

    def check_timesteps(self, timesteps: int) -> None:
        too_many = [k for k in self.exposure_steps if k > timesteps]
        if too_many:
            raise ValueError(f"sampling steps {too_many} exceed the schedule's {timesteps} "
                             "timesteps")


class ExposureSuite:
    """Result per model: {"eps_norm_gap": {T': {"steps", "sampler", "n", "l2", "sq"}},
    "sampler_only": {T': same layout, exact for N(mean, full covariance) of the test set},
    "data_moments": {"mu_norm", "s" (root of the mean pixel variance)},
    "variance_error": {"hop1" | "full": variance_error(...) at the largest T'}}.

    The sampling runs are the unperturbed model's verdict-stream runs, shared with the steps
    ladder (no extra sampling when it has the same sampler and T').
    """

    name = "exposure"
    settings = ExposureSettings

    def ticks(self, settings: Settings) -> int:
        return len(settings.exposure_steps) + len(settings.variance_hops)

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        s = ctx.settings
        mu, cov = data_covariance(ctx.reference.cpu())
        out: dict[str, Any] = {
            "eps_norm_gap": {}, "sampler_only": {},
            "data_moments": {"mu_norm": float(mu.norm()),
                             "s": float(cov.diagonal().mean().sqrt())},
        }
        for steps in s.exposure_steps:
            ctx.describe(f"{ctx.name}: exposure gap T'={steps}")
            recorder = ctx.clean_run(sampler=s.exposure_sampler, steps=steps).eps_norms
            training = training_eps_norms(
                ctx.model, ctx.schedule, ctx.reference, ts=sorted(recorder.counts), seed=s.seed,
                batch_size=s.batch_size,
            )
            out["eps_norm_gap"][str(steps)] = {
                "steps": steps, "sampler": s.exposure_sampler, "n": ctx.n,
                **gap_forms(recorder, training),
            }
            out["sampler_only"][str(steps)] = sampler_only_gap(
                ctx.schedule, mu=mu, cov=cov, steps=steps, sampler=s.exposure_sampler
            )
            ctx.tick()
        variance: dict[str, Any] = {}
        for hop in s.variance_hops:
            ctx.describe(f"{ctx.name}: variance error ({'full' if hop is None else hop})")
            variance["full" if hop is None else f"hop{hop}"] = variance_error(
                ctx.model, ctx.schedule, ctx.reference, steps=max(s.exposure_steps),
                sampler=s.exposure_sampler, hop=hop, seed=s.seed, batch_size=s.batch_size,
            )
            ctx.tick()
        out["variance_error"] = variance
        return out

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        scalars: dict[str, float | None] = {}
        for steps, gap in result["eps_norm_gap"].items():
            only = result["sampler_only"][steps]
            for form in keys.EXPOSURE_FORMS:
                scalars[keys.exposure_gap_key(form, int(steps))] = gap[form]["relative_gap_mean"]
                scalars[keys.exposure_gap_sampler_only_key(form, int(steps))] = (
                    only[form]["relative_gap_mean"]
                )
        largest = max(result["eps_norm_gap"], key=int)
        # the former headline: absolute squared gap at the largest T' (kept for old reports)
        scalars[keys.EPS_NORM_GAP_MEAN] = result["eps_norm_gap"][largest]["sq"]["gap_mean"]
        for name, v in result["variance_error"].items():
            hop = None if name == "full" else int(name.removeprefix("hop"))
            scalars[keys.delta_mean_key(hop)] = v["delta_mean"]
        return SuiteSummary(scalars=scalars)

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_exposure

        return [plot_exposure(results, Path(out_dir) / "robustness_exposure.png")]
