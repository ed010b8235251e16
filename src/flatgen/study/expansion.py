"""The argument behind "flat means robust", tested on the study's own weight perturbations.

The claim rests on L(w + d) ~ L(w) + g.d + 0.5 d.H.d. For every weight-only perturbation the
study applies, d is known: weight quantization (each bit width and granularity of the quant
ladder), weight noise (one filter-normalized direction of its own, at each sigma of the noise
ladder) and the worst case in a per-filter ball (each rho of the perturbation curve). The
training-loss rise they cause on the fixed sharpness batch is measured and set beside the rise
one gradient and one Hessian-vector product predict. Where the two agree, the quadratic form
d.H.d (the whole Hessian) speaks for robustness to that perturbation; where they do not, the
quadratic picture does not hold there. Agreement says nothing yet about lambda_max alone: that
is analysis.expansion.expansion_regression's lambda_max ||d||^2 fit (rows carry the predictor
when expansion_check is given lambda_max), and attach_quality_rise adds the quality (dFID) rise
of the quantization ladders, which apply the very same d.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flatgen import records as keys
from flatgen.analysis import ParamSpace
from flatgen.analysis.expansion import QUALITY_RISE, LossFn, delta_between, loss_rise_check
from flatgen.analysis.hvp import HessianOperator
from flatgen.analysis.perturbation import Ascent, filter_pgd_ascent
from flatgen.robustness.quantize import quantize_weights
from flatgen.robustness.settings import RobustnessSettings
from flatgen.robustness.weight_noise import filter_normalized_direction, perturb_weights

EXPANSION_SEED = 0
# the worst-case ascent this check runs: filter_pgd_ascent's defaults, seed aside
_ASCENT_DEFAULTS = {
    name: p.default for name, p in inspect.signature(filter_pgd_ascent).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _worst_case_delta(
    model: nn.Module, loss_fn: LossFn, rho: float, seed: int, ascents: Mapping[float, Ascent]
) -> torch.Tensor:
    """The ascent's delta: the one given (the sharpness summary ran this very ascent, same
    model, loss, rho and settings) or, where none is given for rho, a new run."""
    given = ascents.get(rho)
    if given is None:
        return filter_pgd_ascent(model, loss_fn, rho, seed=seed).delta
    want = _ASCENT_DEFAULTS | {"seed": seed}
    if given.settings != want:
        raise ValueError(f"the worst-case ascent given for rho={rho:g} ran with {given.settings}, "
                         f"not this check's {want}")
    return given.delta


def expansion_check(
    model: nn.Module, loss_fn: LossFn, *, settings: RobustnessSettings,
    rhos: list[float], seed: int = EXPANSION_SEED,
    ascents: Mapping[float, Ascent] | None = None,
    operator: HessianOperator | None = None,
    lambda_max: float | None = None,
) -> list[dict[str, Any]]:
    """One row per perturbation (analysis.expansion.loss_rise_check's fields, plus `level`).

    Reuse, so that nothing is computed twice: `ascents` ({rho: Ascent}, the sharpness
    summary's .ascents, run on the same model and loss_fn with seed == `seed`) gives the
    worst-case deltas instead of rerunning the ascents (the same ones, bit for bit); `operator`
    (the HessianOperator the summary used) gives the gradient and delta.H.delta products from
    its kept graph. lambda_max adds lambda_max ||delta||^2 to every row (expansion_regression).
    """
    deltas: dict[str, list[torch.Tensor]] = {}
    kinds: list[str] = []
    levels: list[float] = []
    ladders: list[str | None] = []  # the robustness ladder that applied this very delta
    for gran in settings.granularity:
        for bits in settings.bits:
            deltas[f"w{bits}-{gran}"] = delta_between(
                model, quantize_weights(model, bits=bits, granularity=gran))
            kinds.append(f"quantization ({gran})")
            levels.append(bits)
            ladders.append(keys.quant_ladder_id("w", gran))
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))
    for sigma in settings.noise_sigmas:
        deltas[f"noise σ={sigma:g}"] = delta_between(
            model, perturb_weights(model, sigma, direction))
        kinds.append("weight noise")
        levels.append(sigma)
        ladders.append(None)  # the noise suite draws its own directions: another delta
    space = ParamSpace(model)
    for rho in rhos:
        delta = _worst_case_delta(model, loss_fn, rho, seed, ascents or {})
        deltas[f"worst ρ={rho:g}"] = list(space.split(delta))
        kinds.append("worst case (filter ball)")
        levels.append(rho)
        ladders.append(None)
    rows = loss_rise_check(model, loss_fn, deltas, kinds=kinds, operator=operator,
                           lambda_max=lambda_max)
    return [row | {"level": level, "ladder": ladder}
            for row, level, ladder in zip(rows, levels, ladders, strict=True)]


def attach_quality_rise(
    rows: list[dict[str, Any]], ladders: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Copies of expansion_check's rows with quality_rise (the quality score's rise over the
    unperturbed model, e.g. dFID) where a robustness ladder measured the very same delta:
    weights-only quantization (ladder quant_w_<granularity>, the same quantize_weights call).
    Weight-noise rows get none: the noise suite draws its own directions, so its rise belongs
    to another delta of the same sigma. Feeds analysis.expansion.expansion_regression."""
    out = []
    for row in rows:
        row = dict(row)
        ladder = ladders.get(row.get("ladder") or "")
        if ladder and row["level"] in ladder["levels"]:
            value = ladder["values"][list(ladder["levels"]).index(row["level"])]
            if value is not None and ladder.get("clean") is not None:
                row[QUALITY_RISE] = value - ladder["clean"]
        out.append(row)
    return out
