"""Exposure-bias metrics: the epsilon-norm gap (Lee et al. 2025) and the variance error delta_t
(Ning et al., ADM-ES).

- epsilon-norm gap at t: E||eps_theta(x_t, t)|| over sampling-time inputs (the sampler's own
  x_t) minus the same over training-time inputs (real x0 forward-noised to t), in two forms:
  the unsquared L2 norm ("l2", as ADM-ES's script plots it) and the squared norm ("sq", as the
  paper's +11.39 / +3.32 may be). The relative gap divides by the training-input norm; the
  study's verdict uses the l2 relative gap averaged over the sampled timesteps, where no single
  t dominates (the squared absolute gap is dominated by t near 0). The raw network output is
  used (any eps_scale is undone). Even an exact denoiser shows a gap at finite T' (the
  sampler's own error): flatgen.robustness.gaussian gives that part in closed form.
- variance error: forward-noise real x0 to t' > t, run the sampler from t' down to t, and
  compare sigma_hat_t (per-pixel std over samples of x_t - sqrt(abar_t) x0, averaged over
  pixels) with sqrt(1 - abar_t): delta_t = (sigma_hat_t - sqrt(1 - abar_t))^2.
  `hop` sets t': hop=k starts k steps of the sampler's chain above t (hop=1: ADM-ES's
  single-step variant); hop=None starts every chain at the top timestep (the multi-step
  variant). The chain is the sampler's own (a diffusers model's scheduler chain by default).
  Even an exact denoiser gives delta_t > 0 for long hops: the chain forgets part of x0, and
  that loss of information adds variance. Compare models at equal settings, not against 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, SamplerStep, sample
from flatgen.diffusion.samplers import run_sampler, sampler_chain
from flatgen.records import EXPOSURE_FORMS
from flatgen.robustness.util import evaluating, make_generator, model_device


class EpsNormRecorder:
    """An on_step callback summing ||eps|| and ||eps||^2 per timestep over every sampled batch.

    Pass the sampler's eps_scale to record the raw network output.
    """

    def __init__(self, eps_scale: Callable[[int], float] | None = None):
        self.eps_scale = eps_scale
        self.sums: dict[int, float] = {}  # squared norms
        self.l2_sums: dict[int, float] = {}  # unsquared norms
        self.counts: dict[int, int] = {}

    def __call__(self, step: SamplerStep) -> None:
        eps = step.eps.detach()
        if self.eps_scale is not None:
            eps = eps * self.eps_scale(step.t)
        sq = eps.double().flatten(1).pow(2).sum(1)
        self.sums[step.t] = self.sums.get(step.t, 0.0) + sq.sum().item()
        self.l2_sums[step.t] = self.l2_sums.get(step.t, 0.0) + sq.sqrt().sum().item()
        self.counts[step.t] = self.counts.get(step.t, 0) + sq.numel()

    def means(self, form: str = "sq") -> dict[int, float]:
        """Mean norm per timestep, ascending in t: squared ('sq') or unsquared ('l2')."""
        sums = _form_table(form, sq=self.sums, l2=self.l2_sums)
        return {t: sums[t] / self.counts[t] for t in sorted(sums)}


def _form_table(form: str, *, sq: Any, l2: Any) -> Any:
    if form not in EXPOSURE_FORMS:
        raise ValueError(f"form must be one of {', '.join(EXPOSURE_FORMS)}, got {form!r}")
    return sq if form == "sq" else l2


@torch.no_grad()
def training_eps_norms(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    ts: list[int],
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, dict[int, float]]:
    """Mean ||eps_theta(x_t, t)|| ('l2') and ||.||^2 ('sq') with x_t real x0 forward-noised to
    each t (fresh noise per t): {"l2": {t: mean}, "sq": {t: mean}}."""
    out: dict[str, dict[int, float]] = {"l2": {}, "sq": {}}
    x0 = x0.to(model_device(model))
    with evaluating(model):
        for t in ts:
            g = make_generator(seed, "train-eps", t)
            total_sq = total_l2 = 0.0
            for i in range(0, x0.shape[0], batch_size):
                xb = x0[i : i + batch_size]
                noise = torch.randn(tuple(xb.shape), generator=g).to(xb.device, xb.dtype)
                tt = torch.full((xb.shape[0],), t, device=xb.device, dtype=torch.long)
                sq = model(schedule.add_noise(xb, noise, tt), tt).double().flatten(1).pow(2).sum(1)
                total_sq += sq.sum().item()
                total_l2 += sq.sqrt().sum().item()
            out["sq"][t] = total_sq / x0.shape[0]
            out["l2"][t] = total_l2 / x0.shape[0]
    return out


def gap_report(sampling: dict[int, float], training: dict[int, float]) -> dict[str, Any]:
    """Per-timestep lists (ascending t) of one norm form, the gap sampling - training and the
    relative gap gap / training, and their means over the timesteps."""
    ts = sorted(sampling)
    gap = [sampling[t] - training[t] for t in ts]
    relative = [g / training[t] for g, t in zip(gap, ts, strict=True)]
    return {
        "t": ts,
        "sampling": [sampling[t] for t in ts],
        "training": [training[t] for t in ts],
        "gap": gap,
        "relative_gap": relative,
        "gap_mean": sum(gap) / len(gap),
        "relative_gap_mean": sum(relative) / len(relative),
    }


def gap_forms(recorder: EpsNormRecorder, training: dict[str, dict[int, float]]) -> dict[str, Any]:
    """{"l2": gap_report, "sq": gap_report} from a sampling recorder and training_eps_norms."""
    return {form: gap_report(recorder.means(form), training[form]) for form in EXPOSURE_FORMS}


@torch.no_grad()
def epsilon_norm_gap(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    steps: int = 20,
    sampler: str = "adm",
    n: int | None = None,
    seed: int = 0,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The epsilon-norm gap per timestep of a `steps`-step sampler; n sampled chains (default
    len(x0)) against the real x0 forward-noised to the same timesteps. Both forms:
    {"steps", "sampler", "n", "l2": gap_report, "sq": gap_report}."""
    n = n or x0.shape[0]
    recorder = EpsNormRecorder(eps_scale)
    g = make_generator(seed, "eps-gap-sampling", sampler, steps)
    with evaluating(model):
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            sample(
                model,
                schedule,
                (b, *x0.shape[1:]),
                steps=steps,
                sampler=sampler,
                generator=g,
                clip=clip,
                eps_scale=eps_scale,
                on_step=recorder,
            )
    training = training_eps_norms(
        model, schedule, x0, ts=sorted(recorder.counts), seed=seed, batch_size=batch_size
    )
    return {"steps": steps, "sampler": sampler, "n": n, **gap_forms(recorder, training)}


class _Moments:
    """Running per-pixel sums for the std over samples (float64)."""

    def __init__(self) -> None:
        self.n, self.s1, self.s2 = 0, None, None

    def add(self, d: torch.Tensor) -> None:
        d = d.detach().double().flatten(1).cpu()
        s1, s2 = d.sum(0), d.pow(2).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += d.shape[0]

    def mean_std(self) -> float:
        var = (self.s2 - self.s1.pow(2) / self.n) / (self.n - 1)
        return var.clamp_min(0).sqrt().mean().item()


@torch.no_grad()
def variance_error(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    steps: int = 20,
    sampler: str = "adm",
    hop: int | None = 1,
    seed: int = 0,
    clip: bool | None = None,
    eps_scale: Callable[[int], float] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """delta_t on the timesteps of a `steps`-step sampler's chain (sampler_chain: a diffusers
    model's own chain, else flatgen's respaced one; see the module docstring).

    Needs at least 2 samples in x0. Returns ascending t with sigma_hat, the target
    sqrt(1 - abar_t), delta and its mean over t.
    """
    if x0.shape[0] < 2:
        raise ValueError("variance_error needs at least 2 samples")
    pairs = sampler_chain(schedule, steps, sampler)
    ts = sorted(t for t, _ in pairs)  # ascending: pairs[k][0] is ts[top - 1 - k]
    top = len(pairs)
    if len(ts) < 2:
        raise ValueError("variance_error needs a sampler with at least 2 steps")
    if hop is not None and not 1 <= hop < len(ts):
        raise ValueError(f"hop must be in 1..{len(ts) - 1} for {steps} steps, got {hop}")
    abar = schedule.alphas_cumprod
    device = model_device(model)
    x0 = x0.to(device)
    moments: dict[int, _Moments] = {}
    g = make_generator(seed, "variance-error", sampler, steps, hop)
    common = {"steps": steps, "sampler": sampler, "generator": g, "clip": clip,
              "eps_scale": eps_scale}

    def record(t: int, x_t: torch.Tensor, xb: torch.Tensor) -> None:
        moments.setdefault(t, _Moments()).add(x_t - abar[t].item() ** 0.5 * xb)

    def noised(xb: torch.Tensor, t: int) -> torch.Tensor:
        noise = torch.randn(tuple(xb.shape), generator=g).to(device, xb.dtype)
        return schedule.add_noise(xb, noise, torch.full((xb.shape[0],), t, device=device))

    with evaluating(model):
        for i in range(0, x0.shape[0], batch_size):
            xb = x0[i : i + batch_size]
            if hop is None:  # from the top down to ts[0], every step but the last one

                def on_step(s: SamplerStep, xb: torch.Tensor = xb) -> None:
                    if s.t != ts[-1]:
                        record(s.t, s.x_t, xb)

                x = run_sampler(model, schedule, noised(xb, ts[-1]), span=slice(0, top - 1),
                                on_step=on_step, **common)
                record(ts[0], x, xb)
                continue
            for j in range(len(ts) - hop):  # from ts[j + hop] down `hop` steps to ts[j]
                k = top - 1 - j - hop
                x = run_sampler(model, schedule, noised(xb, ts[j + hop]),
                                span=slice(k, k + hop), **common)
                record(ts[j], x, xb)
    t_out = sorted(moments)
    sigma_hat = [moments[t].mean_std() for t in t_out]
    target = [(1 - abar[t].item()) ** 0.5 for t in t_out]
    delta = [(s - r) ** 2 for s, r in zip(sigma_hat, target, strict=True)]
    return {
        "steps": steps,
        "sampler": sampler,
        "hop": hop,
        "n": x0.shape[0],
        "t": t_out,
        "sigma_hat": sigma_hat,
        "sigma_target": target,
        "delta": delta,
        "delta_mean": sum(delta) / len(delta),
    }
