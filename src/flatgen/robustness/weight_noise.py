"""Sample quality under filter-normalized Gaussian weight noise, as a LADDER RECORD.

For every weight with 2 or more dimensions, a Gaussian direction d is drawn and each filter
(slice along dim 0: an output filter of a conv, a row of a linear layer) is rescaled to the
norm of the same filter of the weight, as in Li et al.'s filter normalization; the model is
then evaluated at w + sigma * d. sigma is thus the relative size of the perturbation of every
filter. Biases and normalization parameters (1-D) are not perturbed.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from flatgen.robustness.record import (
    ladder_levels,
    ladder_record,
    score_value,
    with_robust_level,
)
from flatgen.robustness.util import make_generator


def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """name -> a Gaussian direction whose every filter has the norm of the weight's filter
    (analysis.directions.filter_normalize, the one definition of a filter; 1-D parameters are
    left out)."""
    from flatgen.analysis.directions import filter_normalize

    out = {}
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        d = torch.randn(tuple(p.shape), generator=generator, dtype=torch.float32).to(p.device)
        out[name] = filter_normalize(d, p.float()).to(p.dtype)
    return out


def perturb_weights(
    model: nn.Module, sigma: float, direction: dict[str, torch.Tensor]
) -> nn.Module:
    """A copy of model with weights w + sigma * direction[name]; the original is untouched."""
    noisy = copy.deepcopy(model)
    params = dict(noisy.named_parameters())
    with torch.no_grad():
        for name, d in direction.items():
            params[name].add_(d, alpha=sigma)
    return noisy


def metric_value(quality: dict[str, Any], metric: str) -> float:
    """One metric from a quality dict, with a clear error when it is missing."""
    return score_value(quality, metric)


def _noise_ladder(
    model: nn.Module,
    score: Callable[[nn.Module], float],
    *,
    levels: list[float],
    draws: int,
    seed: int,
    stream: str,
    tick: Callable[[], None] | None,
) -> list[list[float]]:
    """Scores per level and draw; draw k uses the same direction at every level."""
    directions = [
        filter_normalized_direction(model, make_generator(seed, "weight-noise", stream, k))
        for k in range(draws)
    ]
    rows = []
    for s in levels:
        row = []
        for d in directions:
            row.append(score(perturb_weights(model, s, d)))
            if tick:
                tick()
        rows.append(row)
    return rows


def weight_noise_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], Any],
    *,
    sigmas: Sequence[float] = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    draws: int = 4,
    seed: int = 0,
    metric: str = "quality",
    clean: Any = None,
    select: bool = False,
    select_evaluate: Callable[[nn.Module], Any] | None = None,
    select_clean: Any = None,
    threshold: float | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A LADDER RECORD of sample quality under weight noise: levels = the positive sigmas
    (sorted), clean = the score of the unperturbed model, values = the mean score over `draws`
    noise directions (draw k uses one direction at every sigma).

    evaluate(model) -> a lower-is-better score: a number or a dict holding `metric`; pass the
    unperturbed model's result as `clean` to skip that run. per_sample = the scores per sigma
    and draw (levels x draws; also extra["per_draw"]); extra = {draws, per_draw, std (over
    draws, 0 for one draw)}. select=True adds select_clean /
    select_values: other draws (a separate generator stream), evaluated by select_evaluate
    (e.g. separate sampling noise; default evaluate), its clean score given as select_clean
    or computed. threshold (absolute, optional) adds extra["robust"], for a single run.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    levels = ladder_levels(sigmas, "sigma")

    def scorer(fn: Callable[[nn.Module], Any]) -> Callable[[nn.Module], float]:
        return lambda m: score_value(fn(m), metric)

    common = {"levels": levels, "draws": draws, "seed": seed, "tick": tick}
    base = score_value(clean if clean is not None else evaluate(model), metric)
    rows = _noise_ladder(model, scorer(evaluate), stream="main", **common)
    extra: dict[str, Any] = {
        "draws": draws,
        "per_draw": rows,
        "std": [statistics.stdev(r) if len(r) > 1 else 0.0 for r in rows],
    }
    sel = None
    if select:
        s_eval = select_evaluate or evaluate
        if select_clean is None:
            select_clean = base if select_evaluate is None else s_eval(model)
        s_rows = _noise_ladder(model, scorer(s_eval), stream="select", **common)
        extra["select_per_draw"] = s_rows
        sel = (score_value(select_clean, metric), [statistics.fmean(r) for r in s_rows])
    record = ladder_record(levels=levels, clean=base, values=[statistics.fmean(r) for r in rows],
                           select=sel, metric=metric, level_name="sigma", extra=extra,
                           per_sample=rows)
    return with_robust_level(record, threshold)
