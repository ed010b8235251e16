"""Adversarial attacks on diffusion models and classifiers, built on flatgen.robustness.pgd.

The diffusion attacks return a LADDER RECORD (flatgen.ladder): levels = the attack radii eps,
clean = the score without attack, values = the score under attack, lower is better. They make
no decision about robustness: a claim compares models against one absolute threshold
(`robust_level` applies one to a record, for a single run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.ladder import first_crossing
from flatgen.robustness.chain import ddim_generate
from flatgen.robustness.pgd import NORMS, check_norm, fgsm, per_sample_norm, pgd
from flatgen.robustness.util import evaluating, make_generator

__all__ = [
    "NORMS",
    "attack_denoiser_input",
    "attack_initial_noise",
    "classifier_robust_accuracy",
    "fgsm",
    "ladder_levels",
    "ladder_record",
    "pgd",
    "robust_level",
]
STREAMS = ("main", "select")  # the verdict's noise, and the separate noise that picks the level


# ---------------------------------------------------------------- ladder records


def ladder_levels(levels: Sequence[float], name: str = "eps") -> list[float]:
    """The positive strengths of a ladder, sorted weakest first; 0 (the clean score, measured
    anyway) is dropped. A negative strength is a user error."""
    if any(v < 0 for v in levels):
        raise ValueError(f"{name} values must be >= 0, got {list(levels)}")
    out = sorted({float(v) for v in levels if v > 0})
    if not out:
        raise ValueError(f"give at least one {name} > 0")
    return out


def ladder_record(
    *,
    levels: Sequence[float],
    clean: float,
    values: Sequence[float],
    metric: str,
    level_name: str,
    extra: dict[str, Any],
    select: tuple[float, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """A LADDER RECORD (see flatgen.ladder); select = (select_clean, select_values) or None."""
    return {
        "levels": list(levels),
        "clean": float(clean),
        "values": [float(v) for v in values],
        "select_clean": None if select is None else float(select[0]),
        "select_values": None if select is None else [float(v) for v in select[1]],
        "metric": metric,
        "level_name": level_name,
        "extra": extra,
    }


def robust_level(record: dict[str, Any], *, threshold: float) -> tuple[float, bool]:
    """(level, censored): where the record's score first exceeds the absolute `threshold`
    (flatgen.ladder.first_crossing, interpolated from the clean score). For one run; a claim
    fixes one threshold from the baseline and applies it to every model."""
    return first_crossing(
        record["levels"], record["values"], threshold, clean=record["clean"]
    )


def with_robust_level(record: dict[str, Any], threshold: float | None) -> dict[str, Any]:
    """record with extra["robust"] = {threshold, level, censored} when a threshold is given."""
    if threshold is not None:
        level, censored = robust_level(record, threshold=threshold)
        record["extra"]["robust"] = {"threshold": threshold, "level": level, "censored": censored}
    return record


# ---------------------------------------------------------------- denoiser input


def _pgd_args(eps: float, attack: dict[str, Any]) -> dict[str, Any]:
    """pgd keywords from the attack settings {norm, steps, restarts, step_factor, zero_first}
    at eps."""
    size = attack["step_factor"] * eps / max(attack["steps"], 1)
    return {"eps": eps, "norm": attack["norm"], "steps": attack["steps"],
            "restarts": attack["restarts"], "step_size": size,
            "zero_first": attack["zero_first"]}


def _xt_ladder(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    *,
    t: int,
    levels: list[float],
    attack: dict[str, Any],
    batch_size: int,
    seed: int,
    stream: str,
    tick: Callable[[], None] | None,
) -> tuple[float, list[float], list[float]]:
    """(clean loss, loss per eps, mean deviation per eps) on one draw of x_t's noise."""
    noise = torch.randn(tuple(x0.shape), generator=make_generator(seed, "xt-noise", stream, t))
    noise = noise.to(x0.device, x0.dtype)
    tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
    x_t = schedule.add_noise(x0, noise, tt)
    sigma = float((1 - schedule.alphas_cumprod[t]).sqrt())
    n, chunks = x0.shape[0], [slice(i, i + batch_size) for i in range(0, x0.shape[0], batch_size)]
    with torch.no_grad():
        eps_clean = torch.cat([model(x_t[c], tt[c]) for c in chunks])
    clean = (eps_clean - noise).pow(2).flatten(1).mean(1).sum().item() / n
    losses, deviations = [], []
    for k, eps in enumerate(levels):
        # one generator per eps runs through the batches: starts independent of the batch size
        gen = make_generator(seed, "xt-pgd", stream, t, attack["norm"], k)
        loss_sum = dev_sum = 0.0
        for c in chunks:

            def objective(z: torch.Tensor, c: slice = c) -> torch.Tensor:
                target = noise[c] + (z - x_t[c]) / sigma  # the noise that z really contains
                return (model(z, tt[c]) - target).pow(2).flatten(1).mean(1)

            adv, val = pgd(objective, x_t[c], generator=gen, return_values=True,
                           **_pgd_args(eps, attack))
            with torch.no_grad():
                dev = per_sample_norm(model(adv, tt[c]) - eps_clean[c]).flatten()
            loss_sum += val.sum().item()
            dev_sum += dev.sum().item()
        losses.append(loss_sum / n)
        deviations.append(dev_sum / n)
        if tick:
            tick()
    return clean, losses, deviations


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
    ball), keeping each image's worst.

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
    attack = {"norm": norm, "steps": steps, "restarts": restarts, "step_factor": step_factor,
              "zero_first": True}
    common = {"t": t, "levels": levels, "attack": attack, "batch_size": batch_size,
              "seed": seed, "tick": tick}
    sigma = float((1 - schedule.alphas_cumprod[t]).sqrt())
    extra: dict[str, Any] = {"eps_over_sigma": [e / sigma for e in levels], "t": t, "norm": norm,
                             "sigma_t": sigma, "n": int(x0.shape[0]), "steps": steps,
                             "restarts": restarts}
    sel = None
    with evaluating(model, freeze=True):
        clean, values, extra["deviation"] = _xt_ladder(
            model, schedule, x0, stream="main", **common
        )
        if select:
            images = x0 if select_x0 is None else select_x0
            s_clean, s_values, extra["select_deviation"] = _xt_ladder(
                model, schedule, images, stream="select", **common
            )
            sel = (s_clean, s_values)
    record = ladder_record(levels=levels, clean=clean, values=values, select=sel,
                           metric="denoising_loss", level_name="eps", extra=extra)
    return with_robust_level(record, threshold)


# ---------------------------------------------------------------- initial noise


def score_value(value: Any, metric: str) -> float:
    """A lower-is-better score from a quality result: a number, or a dict holding `metric`."""
    if isinstance(value, dict):
        if metric not in value:
            raise KeyError(f"metric {metric!r} not in quality results (have {', '.join(value)})")
        value = value[metric]
    return float(value)


def _xT_ladder(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    levels: list[float],
    attack: dict[str, Any],
    score: Callable[[torch.Tensor], float],
    chain: dict[str, Any],
    batch_size: int,
    seed: int,
    stream: str,
    tick: Callable[[], None] | None,
) -> tuple[float, list[float], list[float], float]:
    """(clean score, score per eps, RMS deviation per eps, RMS spread of clean samples)."""
    chunks = [slice(i, i + batch_size) for i in range(0, x_T.shape[0], batch_size)]
    with torch.no_grad():
        clean = torch.cat([ddim_generate(model, schedule, x_T[c], **chain) for c in chunks])
    spread = (clean - clean.roll(1, 0)).pow(2).flatten(1).mean(1).sqrt().mean().item()
    values, deviations = [], []
    for k, eps in enumerate(levels):
        gen = make_generator(seed, "xT-pgd", stream, attack["norm"], k)
        attacked = []
        for c in chunks:

            def objective(z: torch.Tensor, c: slice = c) -> torch.Tensor:
                # a differentiable proxy: how far the sample moves from the clean one
                out = ddim_generate(model, schedule, z, **chain)
                return (out - clean[c]).pow(2).flatten(1).mean(1)

            adv = pgd(objective, x_T[c], generator=gen, **_pgd_args(eps, attack))
            with torch.no_grad():
                attacked.append(ddim_generate(model, schedule, adv, **chain))
        samples = torch.cat(attacked)
        values.append(score(samples))
        deviations.append((samples - clean).pow(2).flatten(1).mean(1).sqrt().mean().item())
        if tick:
            tick()
    return score(clean), values, deviations, spread


def attack_initial_noise(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    eps_list: Sequence[float],
    quality: Callable[[torch.Tensor], Any],
    metric: str = "quality",
    norm: str = "linf",
    sampling_steps: int = 5,
    steps: int = 20,
    restarts: int = 1,
    step_factor: float = 2.5,
    clip: bool | None = None,
    seed: int = 0,
    batch_size: int = 256,
    select: bool = False,
    select_x_T: torch.Tensor | None = None,
    threshold: float | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """PGD on the initial noise x_T of the deterministic DDIM sampler (sampling_steps network
    calls, differentiated through): a LADDER RECORD of sample quality.

    The attack maximizes a differentiable proxy, the squared deviation of each generated sample
    from its clean counterpart (`restarts` runs from random points in the ball: the proxy's
    gradient vanishes at delta = 0); the score is quality(samples) (lower is better: a number, or a
    dict holding `metric`) of all attacked samples together. Record: levels = the positive eps
    (sorted, units of x_T's N(0, 1) scale), clean = quality of the unattacked samples, values =
    quality under attack; extra = {deviation (RMS over pixels, mean over samples, of attacked -
    clean), spread (the same between two different clean samples), norm, sampling_steps, n,
    steps, restarts}. select=True adds select_clean/select_values: the ladder on select_x_T
    (default: a fresh N(0, I) draw from the seed's "select" stream) with other random starts.
    threshold (absolute, optional) adds extra["robust"] (robust_level), for a single run.
    """
    check_norm(norm)
    levels = ladder_levels(eps_list)
    # random starts only: the proxy's gradient vanishes at delta = 0
    attack = {"norm": norm, "steps": steps, "restarts": restarts, "step_factor": step_factor,
              "zero_first": False}
    common = {"levels": levels, "attack": attack, "batch_size": batch_size, "seed": seed,
              "tick": tick, "chain": {"steps": sampling_steps, "clip": clip},
              "score": lambda x: score_value(quality(x), metric)}
    x_T = x_T.detach()
    sel = None
    with evaluating(model, freeze=True):
        clean, values, deviation, spread = _xT_ladder(
            model, schedule, x_T, stream="main", **common
        )
        extra: dict[str, Any] = {"deviation": deviation, "spread": spread, "norm": norm,
                                 "sampling_steps": sampling_steps, "n": int(x_T.shape[0]),
                                 "steps": steps, "restarts": restarts}
        if select:
            if select_x_T is None:
                g = make_generator(seed, "xT-select")
                select_x_T = torch.randn(tuple(x_T.shape), generator=g).to(x_T)
            s_clean, s_values, extra["select_deviation"], _ = _xT_ladder(
                model, schedule, select_x_T.detach(), stream="select", **common
            )
            sel = (s_clean, s_values)
    record = ladder_record(levels=levels, clean=clean, values=values, select=sel,
                           metric=metric, level_name="eps", extra=extra)
    return with_robust_level(record, threshold)


# ---------------------------------------------------------------- classifiers


def classifier_robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_list: Sequence[float],
    norm: str = "linf",
    attack: str = "pgd",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of a classifier (logits = model(x)) under FGSM or PGD on its inputs, per eps.

    Inputs are expected in the clamp box ([0, 1] by default). step_size defaults to
    2.5 * eps / steps. Returns {attack, norm, eps: [0, *sorted eps_list], accuracy: [...],
    clean_accuracy}.
    """
    check_norm(norm)
    if attack not in ("pgd", "fgsm"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm', got {attack!r}")
    eps_all = [0.0, *ladder_levels(eps_list)] if any(e != 0 for e in eps_list) else [0.0]
    accuracy = []
    with evaluating(model, freeze=True):
        for k, eps in enumerate(eps_all):
            gen = make_generator(seed, "classifier", attack, norm, k)
            correct = 0
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]

                def objective(z: torch.Tensor, yb: torch.Tensor = yb) -> torch.Tensor:
                    return F.cross_entropy(model(z), yb, reduction="none")

                if attack == "fgsm":
                    adv = fgsm(objective, xb, eps=eps, norm=norm, clamp=clamp)
                else:
                    adv = pgd(objective, xb, eps=eps, norm=norm, steps=steps, restarts=restarts,
                              step_size=step_size, random_start=random_start, clamp=clamp,
                              generator=gen)
                with torch.no_grad():
                    correct += (model(adv).argmax(1) == yb).sum().item()
            accuracy.append(correct / x.shape[0])
    return {"attack": attack, "norm": norm, "eps": eps_all, "accuracy": accuracy,
            "clean_accuracy": accuracy[0]}
