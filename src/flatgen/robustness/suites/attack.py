"""The attack suite: PGD on the denoiser input x_t at each timestep, and on the sampler's
initial noise x_T, per norm; each a ladder record (flatgen.robustness.attacks), the x_T attack
also scored per sample.

Every draw comes from settings.seed: the attacked test images (a random subset per stream),
x_t's noise, x_T and the random starts; the selection stream draws its own of each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from flatgen import records as keys
from flatgen.robustness.attacks import attack_denoiser_input, attack_initial_noise_ladders
from flatgen.robustness.steps import stream_generator
from flatgen.robustness.suites.base import (
    MAGNITUDES,
    TIMESTEPS,
    UNIQUE,
    Settings,
    SuiteContext,
    SuiteSettings,
    SuiteSummary,
    legacy_robust,
    metric_of,
    stream_count,
)

DIGITS_SHAPE = (1, 8, 8)  # where the digits classifier can label samples
Eps = Annotated[list[float], MAGNITUDES]


class AttackSettings(SuiteSettings):
    """PGD on x_t at each of attack_timesteps (eps_*), and on the initial noise x_T sampled
    through DDIM (init_*), per norm."""

    attack_norms: Annotated[list[Literal["linf", "l2"]], UNIQUE] = Field(
        default_factory=lambda: ["linf", "l2"]
    )
    attack_n: int = Field(64, ge=1)  # test images attacked at x_t (a random subset per stream)
    attack_timesteps: Annotated[list[int], TIMESTEPS] = Field(default_factory=lambda: [100, 500])
    eps_linf: Eps = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
    eps_l2: Eps = Field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    pgd_steps: int = Field(20, ge=1)
    pgd_restarts: int = Field(1, ge=1)  # random restarts per eps (the best one counts)
    pgd_step_factor: float = Field(2.5, gt=0)  # step size = factor * eps / pgd_steps
    random_start: bool = True
    init_n: int = Field(32, ge=2)  # initial noises x_T attacked through DDIM
    init_sampling_steps: int = Field(5, ge=1)
    init_pgd_steps: int | None = Field(None, ge=1)  # None: pgd_steps (each one runs the sampler)
    init_eps_linf: Eps = Field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    init_eps_l2: Eps = Field(default_factory=lambda: [0.2, 0.5, 1.0, 2.0, 4.0, 8.0])

    def check_timesteps(self, timesteps: int) -> None:
        bad_t = [t for t in self.attack_timesteps if t >= timesteps]
        if bad_t:
            raise ValueError(f"attack_timesteps {bad_t} outside 0..{timesteps - 1}")


def eps_for(s: Settings, norm: str) -> list[float]:
    return [e for e in (s.eps_linf if norm == "linf" else s.eps_l2) if e > 0]


def init_eps_for(s: Settings, norm: str) -> list[float]:
    return [e for e in (s.init_eps_linf if norm == "linf" else s.init_eps_l2) if e > 0]


def attack_images(
    reference: torch.Tensor, n: int, *, seed: int, stream: str
) -> tuple[torch.Tensor, list[int]]:
    """(images, their indices): a random subset of n test images (all of them when n is
    larger) drawn from the seed, one subset per stream: common to every model measured with
    the same seed, new across seeds."""
    gen = stream_generator(seed, stream, "attack-images")
    idx = torch.randperm(len(reference), generator=gen)[:n].tolist()
    return reference[idx], idx


def initial_noises(s: Settings, shape: tuple[int, ...], stream: str) -> torch.Tensor:
    """The settings.init_n initial noises x_T that the x_T attack starts from, per stream."""
    gen = stream_generator(s.seed, stream, "init-attack-x_T")
    return torch.randn((s.init_n, *shape), generator=gen)


def digit_labels(shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """samples -> the digits classifier's labels, for 8x8 digits; None for other data."""
    if tuple(shape) != DIGITS_SHAPE:
        return None
    from flatgen.metrics.digits_classifier import load_digits_classifier

    classifier = load_digits_classifier()

    def labels(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return classifier(x.detach().to("cpu", torch.float32)).argmax(1)

    return labels


class AttackSuite:
    """Result per model: {"denoiser_input": {norm: {t: record}}, "initial_noise": {norm:
    record}, "initial_noise_per_sample": {norm: {"dist": record, "flip": record | None}}};
    with selection the records carry select_clean / select_values (other test images, other
    draws of x_t's noise and of x_T, other random starts). The x_t records name their test
    images (extra["images"], extra["select_images"]: indices into the test set)."""

    name = "attack"
    settings = AttackSettings

    def ticks(self, settings: Settings, *, selection: bool = False) -> int:
        """One tick per x_t timestep (every eps and stream in one batch), one per chunk of the
        x_T attack's stacked batch."""
        streams = stream_count(selection)
        return sum(
            len(settings.attack_timesteps)
            + -(-len(init_eps_for(settings, n)) * settings.init_n * streams
                // settings.batch_size)
            for n in settings.attack_norms
        )

    def run(self, ctx: SuiteContext) -> dict[str, Any]:
        s, ref = ctx.settings, ctx.reference
        images = {stream: attack_images(ref, s.attack_n, seed=s.seed, stream=stream)
                  for stream in ctx.streams}
        x_T = {stream: initial_noises(s, ctx.shape, stream).to(ref.device, ref.dtype)
               for stream in ctx.streams}
        common = {"norm": None, "steps": s.pgd_steps, "restarts": s.pgd_restarts,
                  "step_factor": s.pgd_step_factor, "seed": s.seed, "batch_size": s.batch_size,
                  "select": ctx.selection, "tick": ctx.tick}
        denoiser: dict[str, Any] = {}
        init: dict[str, Any] = {}
        per_sample: dict[str, Any] = {}
        labels = digit_labels(ctx.shape)
        for norm in s.attack_norms:
            common["norm"] = norm
            ctx.describe(f"{ctx.name}: PGD on x_t ({norm})")
            denoiser[norm] = {}
            for t in s.attack_timesteps:
                record = attack_denoiser_input(
                    ctx.model, ctx.schedule, images["verdict"][0], t=t,
                    eps_list=eps_for(s, norm), select_x0=images.get("select", (None,))[0],
                    **common,
                )
                record["extra"]["images"] = images["verdict"][1]
                if ctx.selection:
                    record["extra"]["select_images"] = images["select"][1]
                denoiser[norm][str(t)] = record
            ctx.describe(f"{ctx.name}: PGD on x_T ({norm})")
            # scored by the suite's quality metric, resolved on the first evaluation
            ladders = attack_initial_noise_ladders(
                ctx.model, ctx.schedule, x_T["verdict"], eps_list=init_eps_for(s, norm),
                quality=lambda x: metric_of(ctx.quality(x), ctx.metric), metric="quality",
                labels=labels, sampling_steps=s.init_sampling_steps,
                select_x_T=x_T.get("select"),
                **common | {"steps": s.init_pgd_steps or s.pgd_steps},
            )
            init[norm] = ladders.pop("quality")
            init[norm]["metric"] = ctx.metric
            per_sample[norm] = ladders
        return {"denoiser_input": denoiser, "initial_noise": init,
                "initial_noise_per_sample": per_sample}

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
        for norm, ladders in result.get("initial_noise_per_sample", {}).items():
            for score, record in ladders.items():
                if record is not None:  # flip: digits only
                    summary.ladders[keys.attack_xT_sample_ladder_id(norm, score)] = record
        return summary

    def plot(self, results: Mapping[str, Any], out_dir: Path) -> list[Path]:
        from flatgen.robustness.plots import plot_attack

        return [plot_attack(results, Path(out_dir) / "robustness_attack.png")]
