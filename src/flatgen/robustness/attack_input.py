"""PGD on the denoiser input x_t, batched: every eps level of a timestep, on every noise stream,
runs in one stacked batch (the images repeated per eps, each row with its own radius and step).
Each row is the same PGD as an attack at that eps alone: rows do not interact (per-sample
objective, per-sample projection and best point), and each (stream, eps) draws its random starts
from its own generator, so a level's result does not depend on which others share the batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.pgd import check_norm, per_sample_norm, pgd, random_start
from flatgen.robustness.record import (
    chunks,
    ladder_levels,
    ladder_record,
    pgd_settings,
    with_robust_level,
)
from flatgen.robustness.util import evaluating, make_generator


def _noised(
    model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, *, t: int, seed: int,
    stream: str, batch_size: int,
) -> dict[str, torch.Tensor]:
    """One stream's draw of x_t's noise, x_t, and the clean prediction and loss per image."""
    noise = torch.randn(tuple(x0.shape), generator=make_generator(seed, "xt-noise", stream, t))
    noise = noise.to(x0.device, x0.dtype)
    tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
    x_t = schedule.add_noise(x0, noise, tt)
    with torch.no_grad():
        pred = torch.cat([model(x_t[c], tt[c]) for c in chunks(len(x0), batch_size)])
    return {"noise": noise, "x_t": x_t, "pred": pred,
            "loss": (pred - noise).pow(2).flatten(1).mean(1)}


def xt_attack_rows(
    model: nn.Module,
    schedule: NoiseSchedule,
    images: Mapping[str, torch.Tensor],
    *,
    t: int,
    levels: Sequence[float],
    attack: dict[str, Any],
    seed: int,
    batch_size: int,
    tick: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The x_t attack at every level on every stream (stream -> its images), as one stacked
    batch cut into chunks of batch_size rows: stream -> {"clean": loss per image, "loss" and
    "deviation": levels x images}. tick() once when done."""
    sigma = float((1 - schedule.alphas_cumprod[t]).sqrt())
    base = {s: _noised(model, schedule, x0, t=t, seed=seed, stream=s, batch_size=batch_size)
            for s, x0 in images.items()}
    blocks = [(s, float(e)) for s in images for e in levels]
    rows = {key: torch.cat([base[s][key] for s, _ in blocks]) for key in ("noise", "x_t", "pred")}
    counts = [len(images[s]) for s, _ in blocks]
    radius = torch.cat([torch.full((n,), e, dtype=torch.float64) for n, (_, e) in
                        zip(counts, blocks, strict=True)])
    step = attack["step_factor"] * radius / max(attack["steps"], 1)
    # each (stream, eps) draws its own starts in restart order, as it would alone
    n_random = attack["restarts"] - (1 if attack["zero_first"] else 0)
    drawn = []
    for s, e in blocks:
        gen = make_generator(seed, "xt-pgd", s, t, attack["norm"], e)
        drawn.append([random_start(base[s]["x_t"], e, attack["norm"], generator=gen)
                      for _ in range(n_random)])
    starts = [torch.cat([d[r] for d in drawn]) for r in range(n_random)]
    tt = torch.full((len(radius),), t, device=rows["x_t"].device, dtype=torch.long)
    loss, dev = [], []
    for c in chunks(len(radius), batch_size):

        def objective(z: torch.Tensor, c: slice = c) -> torch.Tensor:
            target = rows["noise"][c] + (z - rows["x_t"][c]) / sigma  # the noise z contains
            return (model(z, tt[c]) - target).pow(2).flatten(1).mean(1)

        adv, val = pgd(objective, rows["x_t"][c], eps=radius[c], step_size=step[c],
                       norm=attack["norm"], steps=attack["steps"], restarts=attack["restarts"],
                       zero_first=attack["zero_first"], starts=[r[c] for r in starts],
                       return_values=True)
        with torch.no_grad():
            dev.append(per_sample_norm(model(adv, tt[c]) - rows["pred"][c]).flatten())
        loss.append(val)
    out: dict[str, dict[str, Any]] = {}
    values, devs = torch.cat(loss).split(counts), torch.cat(dev).split(counts)
    for (s, _), v, d in zip(blocks, values, devs, strict=True):
        part = out.setdefault(s, {"clean": base[s]["loss"], "loss": [], "deviation": []})
        part["loss"].append(v)
        part["deviation"].append(d)
    if tick:
        tick()
    return out


def attack_denoiser_input(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    t: int,
    eps_list: Sequence[float],
    norm: str = "linf",
    steps: int = 20,
    restarts: int = 2,
    step_factor: float = 2.5,
    seed: int = 0,
    batch_size: int = 256,
    select: bool = False,
    select_x0: torch.Tensor | None = None,
    threshold: float | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """PGD on the denoiser input x_t at timestep t: a LADDER RECORD of the denoising loss.

    With abar = abar_t and sigma_t = sqrt(1 - abar) (flatgen.diffusion.NoiseSchedule),
    x_t = sqrt(abar) x0 + sigma_t e. The attacked input x_t + delta equals
    sqrt(abar) x0 + sigma_t (e + delta / sigma_t): the noise it contains is e + delta / sigma_t,
    so the score is the loss against that consistent target,
        L(delta) = mean over pixels of (eps_hat(x_t + delta, t) - e - delta / sigma_t)^2,
    averaged over the images (scoring against e alone would mostly measure the target moving).
    PGD maximizes L per image in the L-inf or L2 ball of radius eps (data-range units: images
    live in [-1, 1]; no box clamp, since x_t is not in a box), `steps` steps of
    step_factor * eps / steps from `restarts` starts (delta = 0, then random points in the
    ball), keeping each image's worst. All eps levels and both streams run as one batch
    (xt_attack_rows); a level's random starts come from (seed, stream, t, norm, eps).

    Record: levels = the positive eps (sorted), clean = L(0), values = L under attack;
    extra = {eps_over_sigma, deviation (mean over images of ||eps_hat(x_t + delta) -
    eps_hat(x_t)||_2 at the attack's delta), t, norm, sigma_t, n, steps, restarts}.
    select=True adds select_clean/select_values: the same ladder on another draw of e (on
    select_x0 when given) with other random starts (extra["select_deviation"] beside).
    threshold (absolute, optional) adds extra["robust"] (robust_level), for a single run.
    """
    check_norm(norm)
    if not 0 <= t < schedule.timesteps:
        raise ValueError(f"t must be in 0..{schedule.timesteps - 1}, got {t}")
    levels = ladder_levels(eps_list)
    attack = pgd_settings(norm=norm, steps=steps, restarts=restarts, step_factor=step_factor,
                          zero_first=True)
    sigma = float((1 - schedule.alphas_cumprod[t]).sqrt())
    images = {"main": x0}
    if select:
        images["select"] = x0 if select_x0 is None else select_x0
    with evaluating(model, freeze=True):
        res = xt_attack_rows(model, schedule, images, t=t, levels=levels, attack=attack,
                             seed=seed, batch_size=batch_size, tick=tick)
    extra: dict[str, Any] = {"eps_over_sigma": [e / sigma for e in levels], "t": t, "norm": norm,
                             "sigma_t": sigma, "n": int(x0.shape[0]), "steps": steps,
                             "restarts": restarts}

    def ladder(stream: str) -> tuple[float, list[float], list[float]]:
        r = res[stream]
        return (r["clean"].mean().item(), [v.mean().item() for v in r["loss"]],
                [d.mean().item() for d in r["deviation"]])

    clean, values, extra["deviation"] = ladder("main")
    sel = None
    if select:
        s_clean, s_values, extra["select_deviation"] = ladder("select")
        sel = (s_clean, s_values)
    record = ladder_record(levels=levels, clean=clean, values=values, select=sel,
                           metric="denoising_loss", level_name="eps", extra=extra)
    return with_robust_level(record, threshold)
