"""PGD on the sampler's initial noise x_T, batched over eps levels and noise streams, scored per
sample (the distance of each attacked sample from its unattacked one, and whether a classifier's
label of it changes) and by the set-level quality of the attacked samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.robustness.chain import ddim_generate
from flatgen.robustness.pgd import check_norm, pgd, random_start
from flatgen.robustness.record import (
    chunks,
    ladder_levels,
    ladder_record,
    pgd_settings,
    score_value,
    with_robust_level,
)
from flatgen.robustness.util import evaluating, make_generator

Labeler = Callable[[torch.Tensor], torch.Tensor]  # samples -> class labels (N,)


def xT_attack_rows(  # noqa: N802 - x_T
    model: nn.Module,
    schedule: NoiseSchedule,
    noises: Mapping[str, torch.Tensor],
    *,
    levels: Sequence[float],
    attack: dict[str, Any],
    chain: dict[str, Any],
    seed: int,
    batch_size: int,
    tick: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The x_T attack at every level on every stream (stream -> its initial noises) as one
    stacked batch in chunks of batch_size rows: stream -> {"clean": unattacked samples,
    "attacked": [samples per level]}. tick() after each chunk.

    Objective (per sample, so that PGD can move each one): the squared distance of the final
    sample from its unattacked counterpart, mean over pixels; the set-level quality score is
    not differentiable and barely moves when one valid digit turns into another."""
    with torch.no_grad():
        clean = {s: torch.cat([ddim_generate(model, schedule, x[c], **chain)
                               for c in chunks(len(x), batch_size)]) for s, x in noises.items()}
    blocks = [(s, float(e)) for s in noises for e in levels]
    counts = [len(noises[s]) for s, _ in blocks]
    x_rows = torch.cat([noises[s] for s, _ in blocks])
    target = torch.cat([clean[s] for s, _ in blocks])
    radius = torch.cat([torch.full((n,), e, dtype=torch.float64) for n, (_, e) in
                        zip(counts, blocks, strict=True)])
    step = attack["step_factor"] * radius / max(attack["steps"], 1)
    drawn = []  # random starts only: the objective's gradient vanishes at delta = 0
    for s, e in blocks:
        gen = make_generator(seed, "xT-pgd", s, attack["norm"], e)
        drawn.append([random_start(noises[s], e, attack["norm"], generator=gen)
                      for _ in range(attack["restarts"])])
    starts = [torch.cat([d[r] for d in drawn]) for r in range(attack["restarts"])]
    attacked = []
    for c in chunks(len(radius), batch_size):

        def objective(z: torch.Tensor, c: slice = c) -> torch.Tensor:
            moved = ddim_generate(model, schedule, z, **chain) - target[c]
            return moved.pow(2).flatten(1).mean(1)

        adv = pgd(objective, x_rows[c], eps=radius[c], step_size=step[c], norm=attack["norm"],
                  steps=attack["steps"], restarts=attack["restarts"], zero_first=False,
                  starts=[r[c] for r in starts])
        with torch.no_grad():
            attacked.append(ddim_generate(model, schedule, adv, **chain))
        if tick:
            tick()
    out: dict[str, dict[str, Any]] = {s: {"clean": clean[s], "attacked": []} for s in noises}
    for (s, _), samples in zip(blocks, torch.cat(attacked).split(counts), strict=True):
        out[s]["attacked"].append(samples)
    return out


def _scores(
    part: dict[str, Any], score: Callable[[torch.Tensor], float], labels: Labeler | None
) -> dict[str, Any]:
    """Set-level score, RMS deviation, per-sample L2 distance and label flips of one stream."""
    clean = part["clean"]
    clean_labels = labels(clean) if labels is not None else None
    out: dict[str, Any] = {"clean": score(clean), "values": [], "deviation": [], "dist": [],
                           "flip": [] if labels is not None else None}
    for samples in part["attacked"]:
        diff = (samples - clean).flatten(1)
        out["values"].append(score(samples))
        out["deviation"].append(diff.pow(2).mean(1).sqrt().mean().item())
        out["dist"].append(diff.norm(dim=1).tolist())  # L2 in data units, per sample
        if labels is not None:
            out["flip"].append((labels(samples) != clean_labels).double().tolist())
    return out


def attack_initial_noise_ladders(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    eps_list: Sequence[float],
    quality: Callable[[torch.Tensor], Any],
    metric: str = "quality",
    labels: Labeler | None = None,
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
) -> dict[str, dict[str, Any] | None]:
    """PGD on the initial noise x_T of the deterministic DDIM sampler (sampling_steps network
    calls, differentiated through), maximizing each sample's squared distance from its
    unattacked counterpart (`restarts` runs from random points in the ball: the objective's
    gradient vanishes at delta = 0; every level and stream in one batch, xT_attack_rows).

    Returns three LADDER RECORDS (levels = the positive eps, sorted, in units of x_T's N(0, 1)):
    - "quality": clean = quality of the unattacked samples, values = quality(attacked samples)
      (lower is better: a number, or a dict holding `metric`); extra = {deviation (RMS over
      pixels, mean over samples, of attacked - clean), spread (the same between two different
      clean samples), norm, sampling_steps, n, steps, restarts};
    - "dist": per sample, the L2 distance (data units) of the attacked sample from the
      unattacked one: values = mean over the initial noises, clean = 0, per_sample = levels x
      samples; extra["spread_l2"]: the mean L2 distance between two different clean samples,
      the scale on which a distance means "turned into another sample";
    - "flip" (None without `labels`): per sample, 1 where labels(attacked) != labels(clean):
      values = the share flipped, clean = 0 (the unattacked sample against itself).
    select=True adds select_clean/select_values (and extra["select_per_sample"] for the
    per-sample ladders): the ladders on select_x_T (default a fresh N(0, I) draw from the seed's
    "select" stream) with other random starts. threshold (absolute, optional) adds
    extra["robust"] to the quality record, for a single run.
    """
    check_norm(norm)
    levels = ladder_levels(eps_list)
    attack = pgd_settings(norm=norm, steps=steps, restarts=restarts, step_factor=step_factor,
                          zero_first=False)
    chain = {"steps": sampling_steps, "clip": clip}
    noises = {"main": x_T.detach()}
    if select:
        if select_x_T is None:
            select_x_T = torch.randn(tuple(x_T.shape), generator=make_generator(seed, "xT-select"))
        noises["select"] = select_x_T.detach().to(x_T)
    with evaluating(model, freeze=True):
        res = xT_attack_rows(model, schedule, noises, levels=levels, attack=attack, chain=chain,
                             seed=seed, batch_size=batch_size, tick=tick)
        score = {s: _scores(part, lambda x: score_value(quality(x), metric), labels)
                 for s, part in res.items()}
    main = res["main"]["clean"]
    spread = (main - main.roll(1, 0)).pow(2).flatten(1).mean(1).sqrt().mean().item()
    m, sel = score["main"], score.get("select")
    extra: dict[str, Any] = {"deviation": m["deviation"], "spread": spread, "norm": norm,
                             "sampling_steps": sampling_steps, "n": int(x_T.shape[0]),
                             "steps": steps, "restarts": restarts}
    if sel is not None:
        extra["select_deviation"] = sel["deviation"]
    out: dict[str, dict[str, Any] | None] = {"quality": with_robust_level(ladder_record(
        levels=levels, clean=m["clean"], values=m["values"], metric=metric, level_name="eps",
        extra=extra, select=None if sel is None else (sel["clean"], sel["values"])), threshold)}
    for kind, name in (("dist", "sample_l2_distance"), ("flip", "label_flip")):
        if m[kind] is None:
            out[kind] = None
            continue
        means = [sum(row) / len(row) for row in m[kind]]
        sub = {"norm": norm, "n": int(x_T.shape[0]), "score": "mean over the initial noises"}
        if kind == "dist":  # the scale: how far apart two different clean samples are
            sub["spread_l2"] = (main - main.roll(1, 0)).flatten(1).norm(dim=1).mean().item()
        select_means = None
        if sel is not None:
            sub["select_per_sample"] = sel[kind]
            select_means = (0.0, [sum(row) / len(row) for row in sel[kind]])
        out[kind] = ladder_record(levels=levels, clean=0.0, values=means, metric=name,
                                  level_name="eps", extra=sub, select=select_means,
                                  per_sample=m[kind])
    return out


def attack_initial_noise(
    model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, **kwargs: Any
) -> dict[str, Any]:
    """The set-level quality record of attack_initial_noise_ladders (same keywords)."""
    record = attack_initial_noise_ladders(model, schedule, x_T, **kwargs)["quality"]
    assert record is not None
    return record
