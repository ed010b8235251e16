"""The attack suite: PGD on the denoiser input x_t at each timestep, and on the sampler's
initial noise x_T, per norm; each a ladder record (flatgen.robustness.attacks)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flatgen import records as keys
from flatgen.robustness.attacks import attack_denoiser_input, attack_initial_noise
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites.base import SuiteContext, SuiteSummary, legacy_robust, metric_of
from flatgen.robustness.util import make_generator


def eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.eps_linf if norm == "linf" else s.eps_l2) if e > 0]


def init_eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.init_eps_linf if norm == "linf" else s.init_eps_l2) if e > 0]


class AttackSuite:
    """Result per model: {"denoiser_input": {norm: {t: record}}, "initial_noise": {norm:
    record}}; with selection the records carry select_clean / select_values (other draws of
    x_t's noise and of x_T, other random starts)."""

    name = "attack"

    def ticks(self, settings: RobustnessSettings) -> int:
        return sum(
            len(settings.attack_timesteps) * len(eps_for(settings, n))
            + len(init_eps_for(settings, n))
            for n in settings.attack_norms
        )

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        s, ref = ctx.settings, ctx.reference
        g = make_generator(s.seed, "init-attack-x_T")
        x_T = torch.randn((s.init_n, *ctx.shape), generator=g).to(ref.device, ref.dtype)
        common = {"norm": None, "steps": s.pgd_steps, "restarts": s.pgd_restarts,
                  "step_factor": s.pgd_step_factor, "seed": s.seed, "batch_size": s.batch_size,
                  "select": ctx.selection, "tick": ctx.tick}
        denoiser: dict[str, Any] = {}
        init: dict[str, Any] = {}
        for norm in s.attack_norms:
            common["norm"] = norm
            ctx.describe(f"{ctx.name}: PGD on x_t ({norm})")
            denoiser[norm] = {
                str(t): attack_denoiser_input(
                    ctx.model, ctx.schedule, ref[: s.attack_n], t=t, eps_list=eps_for(s, norm),
                    **common,
                )
                for t in s.attack_timesteps
            }
            ctx.describe(f"{ctx.name}: PGD on x_T ({norm})")
            # scored by the suite's quality metric, resolved on the first evaluation
            init[norm] = attack_initial_noise(
                ctx.model, ctx.schedule, x_T, eps_list=init_eps_for(s, norm),
                quality=lambda x: metric_of(ctx.quality(x), ctx.metric), metric="quality",
                sampling_steps=s.init_sampling_steps,
                **common | {"steps": s.init_pgd_steps or s.pgd_steps},
            )
            init[norm]["metric"] = ctx.metric
        return {"denoiser_input": denoiser, "initial_noise": init}

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        summary = SuiteSummary()
        fraction = 0.5  # the former per-model threshold, for the legacy robust_eps_* keys only
        for norm, per_t in result["denoiser_input"].items():
            for t, record in per_t.items():
                summary.ladders[keys.attack_xt_ladder_id(norm, int(t))] = record
                legacy_robust(summary, f"denoiser_{norm}_t{t}", record, fraction=fraction)
        for norm, record in result["initial_noise"].items():
            summary.ladders[keys.attack_xT_ladder_id(norm)] = record
            legacy_robust(summary, f"initial_noise_{norm}", record, fraction=fraction)
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_attack

        return [plot_attack(results, Path(out_dir) / "robustness_attack.png")]
