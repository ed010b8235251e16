"""The attack suite: PGD on the denoiser input x_t at each timestep, and on the sampler's
initial noise x_T, per norm. The attacks themselves live in flatgen.robustness.attacks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from flatgen.robustness import keys
from flatgen.robustness.attacks import attack_denoiser_input, attack_initial_noise
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.suites.base import SuiteContext, SuiteSummary
from flatgen.robustness.util import derive_seed, make_generator


def eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.eps_linf if norm == "linf" else s.eps_l2) if e > 0]


def init_eps_for(s: RobustnessSettings, norm: str) -> list[float]:
    return [e for e in (s.init_eps_linf if norm == "linf" else s.init_eps_l2) if e > 0]


def _stream_seed(seed: int, stream: str) -> int:
    # the selection stream: other starting noise, attack restarts and x_t draws
    return seed if stream == "verdict" else derive_seed(seed, stream)


class AttackSuite:
    """Result per model: {"denoiser_input": {norm: {t: sweep}}, "initial_noise": {norm: sweep},
    "select": the same on the selection stream (selection only)}."""

    name = "attack"

    def ticks(self, settings: RobustnessSettings) -> int:
        return sum(
            len(settings.attack_timesteps) * (len(eps_for(settings, n)) + 1)
            + len(init_eps_for(settings, n)) + 1
            for n in settings.attack_norms
        )

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        out = self._sweeps(ctx, "verdict")
        if ctx.selection:
            out["select"] = self._sweeps(ctx, "select")
        return out

    def _sweeps(self, ctx: SuiteContext, stream: str) -> dict[str, Any]:
        s, ref = ctx.settings, ctx.reference
        seed = _stream_seed(s.seed, stream)
        tick = ctx.tick if stream == "verdict" else None
        g = make_generator(seed, "init-attack-x_T")
        x_T = torch.randn((s.init_n, *ctx.shape), generator=g).to(ref.device, ref.dtype)
        denoiser: dict[str, Any] = {}
        init: dict[str, Any] = {}
        for norm in s.attack_norms:
            ctx.describe(f"{ctx.name}: attacks ({norm})")
            denoiser[norm] = {
                str(t): attack_denoiser_input(
                    ctx.model, ctx.schedule, ref[: s.attack_n], t, eps_for(s, norm), norm,
                    s.pgd_steps, s.pgd_step_factor, s.random_start, seed, s.batch_size,
                    s.robust_fraction, tick,
                )
                for t in s.attack_timesteps
            }
            init[norm] = attack_initial_noise(
                ctx.model, ctx.schedule, x_T, init_eps_for(s, norm), norm,
                sampling_steps=s.init_sampling_steps, steps=s.pgd_steps,
                step_factor=s.pgd_step_factor, random_start=s.random_start, seed=seed,
                fraction=s.robust_fraction, batch_size=s.batch_size, tick=tick,
            )
        return {"denoiser_input": denoiser, "initial_noise": init}

    def summarize(self, result: Mapping[str, Any], *, metric: str) -> SuiteSummary:
        summary = SuiteSummary()
        select = result.get("select")
        for norm, per_t in result["denoiser_input"].items():
            for t, r in per_t.items():
                name = f"denoiser_{norm}_t{t}"
                summary.robust[name], summary.largest[name] = r["robust_epsilon"], max(r["eps"])
                sel = select["denoiser_input"][norm][t] if select else None
                summary.ladders[keys.attack_xt_ladder_id(norm, int(t))] = _ladder(
                    r, sel, "loss", "denoising_loss"
                )
        for norm, r in result["initial_noise"].items():
            name = f"initial_noise_{norm}"
            summary.robust[name], summary.largest[name] = r["robust_epsilon"], max(r["eps"])
            sel = select["initial_noise"][norm] if select else None
            summary.ladders[keys.attack_xT_ladder_id(norm)] = _ladder(
                r, sel, "normalized_deviation", "normalized_deviation"
            )
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_attack

        return [plot_attack(results, Path(out_dir) / "robustness_attack.png")]


def _ladder(r: Mapping[str, Any], sel: Mapping[str, Any] | None, key: str, metric: str) -> dict:
    """A ladder record from a sweep whose first point is eps = 0 (the clean score)."""
    return keys.ladder_record(
        levels=r["eps"][1:], clean=r[key][0], values=r[key][1:],
        select_clean=sel[key][0] if sel else None, select_values=sel[key][1:] if sel else None,
        metric=metric, level_name="eps",
    )
