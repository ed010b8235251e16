"""The exposure suite: the eps-norm gap between sampling and training inputs at each T' of
settings.exposure_steps (both norm forms), the part the sampler alone causes (exact for
Gaussian data with the test set's mean and full covariance), and the variance error delta_t."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flatgen import records as keys
from flatgen.robustness.exposure import gap_forms, training_eps_norms, variance_error
from flatgen.robustness.gaussian import data_covariance, sampler_only_gap
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites.base import SuiteContext, SuiteSummary


class ExposureSuite:
    """Result per model: {"eps_norm_gap": {T': {"steps", "sampler", "n", "l2", "sq"}},
    "sampler_only": {T': same layout, exact for N(mean, full covariance) of the test set},
    "data_moments": {"mu_norm", "s" (root of the mean pixel variance)},
    "variance_error": {"hop1" | "full": variance_error(...) at the largest T'}}.

    The sampling runs are the unperturbed model's verdict-stream runs, shared with the steps
    ladder (no extra sampling when it has the same sampler and T').
    """

    name = "exposure"

    def ticks(self, settings: RobustnessSettings) -> int:
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
