"""Test the second-order argument: does L(w + delta) - L(w) ~ g.delta + 0.5 delta.H.delta hold?

The claim that flat minima are robust rests on this expansion. For a weight perturbation whose
delta is known (weight quantization, weight noise, a worst case in a ball), loss_rise_check
measures the real rise of loss_fn on its fixed batch and predicts it from one gradient and one
Hessian-vector product (flatgen.analysis.hvp) at w. expansion_summary says where the prediction
holds (within a relative tolerance), by perturbation kind and by size. expansion_regression
says how much of the measured rise the full prediction explains (R^2, slope) and how much
lambda_max ||delta||^2 alone does: agreement of the full expansion is not evidence for lambda_max.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from flatgen.analysis.hvp import HessianOperator, HVPMethod, hessian_operator
from flatgen.analysis.params import LossFn, ParamSpace, analysis_mode, functional_loss

# A known weight perturbation: per-parameter tensors (ParamSpace order, the model's trainable
# parameters), one flat vector, or a callable that perturbs a copy of the model in place (or
# returns a perturbed module with the same parameter names).
Perturbation = Sequence[torch.Tensor] | torch.Tensor | Callable[[nn.Module], nn.Module | None]

DEFAULT_TOLERANCE = 0.25  # the expansion "holds" where |predicted - measured| <= 25% of measured
LAMBDA_MAX_PREDICTOR = "lambda_max_delta_sq"  # row field: lambda_max * ||delta||^2
QUALITY_RISE = "quality_rise"  # row field a caller may add: the quality metric's rise (dFID)


def delta_between(model: nn.Module, perturbed: nn.Module) -> list[torch.Tensor]:
    """perturbed's trainable parameters minus model's, in ParamSpace(model) order."""
    space = ParamSpace(model)
    other = dict(perturbed.named_parameters())
    missing = [n for n in space.names if n not in other]
    if missing:
        raise ValueError(
            f"the perturbed model lacks parameters {', '.join(missing[:3])}; perturb a copy of "
            "the same architecture (a weight-only perturbation)"
        )
    return [
        (other[n].detach() - p.detach()) for n, p in zip(space.names, space.params, strict=True)
    ]


def _flat_delta(model: nn.Module, space: ParamSpace, perturbation: Perturbation) -> torch.Tensor:
    if callable(perturbation) and not isinstance(perturbation, torch.Tensor):
        twin = copy.deepcopy(model)
        with torch.no_grad():
            out = perturbation(twin)
        perturbation = delta_between(model, out if out is not None else twin)
    if isinstance(perturbation, torch.Tensor):
        if perturbation.shape != (space.n,):
            raise ValueError(
                f"a flat delta must have shape ({space.n},), got {tuple(perturbation.shape)}"
            )
        return perturbation.detach().to(space.device, space.dtype)
    parts = list(perturbation)
    shapes = [tuple(t.shape) for t in parts]
    if shapes != [tuple(s) for s in space.shapes]:
        raise ValueError(f"delta shapes {shapes} do not match the trainable parameters")
    return space.flatten([t.detach().to(space.device, space.dtype) for t in parts])


def _relative_error(predicted: float, measured: float) -> float | None:
    if measured == 0:
        return 0.0 if predicted == 0 else None  # undefined: nothing to be relative to
    return abs(predicted - measured) / abs(measured)


def loss_rise_check(
    model: nn.Module,
    loss_fn: LossFn,
    perturbations: Sequence[Perturbation] | Mapping[str, Perturbation],
    *,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
    lambda_max: float | None = None,
) -> list[dict]:
    """Measured and second-order-predicted loss rise of loss_fn for each known perturbation.

    One dict per perturbation: name, kind (default: the name), measured = L(w + delta) - L(w),
    predicted = linear + quadratic with linear = g.delta and quadratic = 0.5 delta.H.delta (g
    and H at w, one Hessian-vector product each), delta_norm = ||delta||_2, rel_error =
    |predicted - measured| / |measured| (None where measured is 0 and predicted is not), loss0
    = L(w) and loss_eps, the float resolution of the measured rise (machine epsilon * |L(w)|;
    rises near it are rounding). A Mapping gives the names. Losses are evaluated with dropout
    off and BatchNorm on running statistics; the model is not modified. `operator`: a
    HessianOperator of this model and loss_fn to use (and leave open) instead of a new one.
    Given lambda_max (the top Hessian eigenvalue at w), each row also carries
    lambda_max_delta_sq = lambda_max ||delta||^2, what lambda_max alone predicts (twice the
    largest 0.5 delta.H.delta for that ||delta||; see expansion_regression).
    """
    if isinstance(perturbations, Mapping):
        if names is not None:
            raise ValueError("give names either as the Mapping's keys or as names=, not both")
        names, perturbations = list(perturbations), list(perturbations.values())
    perturbations = list(perturbations)
    names = list(names) if names is not None else [f"p{i}" for i in range(len(perturbations))]
    kinds = list(kinds) if kinds is not None else names
    if not len(names) == len(kinds) == len(perturbations):
        raise ValueError(
            f"{len(perturbations)} perturbations need as many names and kinds "
            f"(got {len(names)} and {len(kinds)})"
        )
    space = ParamSpace(model)
    w = space.flat()
    deltas = [_flat_delta(model, space, p) for p in perturbations]
    rows = []
    with hessian_operator(model, loss_fn, method=method, operator=operator) as op:
        grad, loss0 = op.gradient(), op.loss
        eps = torch.finfo(space.dtype).eps * abs(loss0)
        for name, kind, delta in zip(names, kinds, deltas, strict=True):
            with analysis_mode(model), torch.no_grad():
                loss1 = float(functional_loss(model, loss_fn, space.to_dict(w + delta)))
            linear = float(grad @ delta)
            quadratic = 0.5 * float(delta @ op.matvec(delta))
            measured, predicted = loss1 - loss0, linear + quadratic
            row = {
                "name": name,
                "kind": kind,
                "measured": measured,
                "predicted": predicted,
                "linear": linear,
                "quadratic": quadratic,
                "delta_norm": float(delta.norm()),
                "rel_error": _relative_error(predicted, measured),
                "loss0": loss0,
                "loss_eps": eps,
            }  # fmt: skip
            if lambda_max is not None:
                row[LAMBDA_MAX_PREDICTOR] = float(lambda_max) * float(delta @ delta)
            rows.append(row)
    return rows


def _holds(row: Mapping, tolerance: float) -> bool:
    err = row.get("rel_error")
    return err is not None and math.isfinite(err) and err <= tolerance


def expansion_summary(rows: Sequence[Mapping], *, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Where the expansion holds: n, n_within, share within `tolerance` (relative error), the
    same per kind, and holds_below, the largest ||delta|| below which every row holds (0.0 if
    the smallest fails, None if there are no rows)."""
    rows = list(rows)
    within = [_holds(r, tolerance) for r in rows]
    by_kind: dict[str, dict] = {}
    for r, ok in zip(rows, within, strict=True):
        k = by_kind.setdefault(r["kind"], {"n": 0, "n_within": 0})
        k["n"] += 1
        k["n_within"] += int(ok)
    for k in by_kind.values():
        k["share"] = k["n_within"] / k["n"]
    holds_below = None
    if rows:
        holds_below = 0.0
        for r, ok in sorted(zip(rows, within, strict=True), key=lambda x: x[0]["delta_norm"]):
            if not ok:
                break
            holds_below = r["delta_norm"]
    n_within = sum(within)
    return {
        "tolerance": tolerance,
        "n": len(rows),
        "n_within": n_within,
        "share": n_within / len(rows) if rows else None,
        "by_kind": by_kind,
        "holds_below": holds_below,
    }


def expansion_title(rows: Sequence[Mapping], *, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """One line saying where the expansion holds, e.g. for a plot title."""
    s = expansion_summary(rows, tolerance=tolerance)
    kinds = ", ".join(f"{k} {v['n_within']}/{v['n']}" for k, v in s["by_kind"].items())
    head = f"2nd-order prediction within {tolerance:.0%}: {s['n_within']}/{s['n']}"
    tail = "" if s["holds_below"] is None else f"; all hold up to ||δ|| = {s['holds_below']:.3g}"
    return f"{head} ({kinds}){tail}"


def _fit(pairs: Sequence[tuple[float, float]], x: str, y: str) -> dict:
    """Least squares y = slope x + intercept (scipy.stats.linregress) with its R^2 and n; the
    numbers are None where the fit is undefined (under 2 points, or x or y constant)."""
    pts = np.array([p for p in pairs if math.isfinite(p[0]) and math.isfinite(p[1])], float)
    out: dict = {"x": x, "y": y, "n": len(pts), "slope": None, "intercept": None, "r2": None}
    if len(pts) < 2 or np.ptp(pts[:, 0]) == 0:
        return out
    fit = stats.linregress(pts[:, 0], pts[:, 1])
    out["slope"], out["intercept"] = float(fit.slope), float(fit.intercept)
    out["r2"] = float(fit.rvalue**2) if np.ptp(pts[:, 1]) > 0 else None
    return out


def expansion_regression(rows: Sequence[Mapping]) -> dict:
    """What lambda_max predicts of the loss rise, and what the full second order predicts.

    Three least-squares fits over the rows of loss_rise_check (each: x, y, slope, intercept,
    r2, n): "lambda_max", the measured rise on lambda_max ||delta||^2 (rows with that field:
    loss_rise_check(..., lambda_max=...)); "second_order", the measured rise on the prediction
    g.delta + 0.5 delta.H.delta (slope 1, intercept 0 and R^2 1 where the expansion holds);
    "quality", the quality rise (e.g. dFID rise; rows with a "quality_rise" field) on the
    measured loss rise. A fit with no rows for it is None. lambda_max ||delta||^2 bounds
    2 x 0.5 delta.H.delta from above for every delta, but it predicts the rise only where the
    perturbations lie along the top eigenvector: random and quantization directions spread
    over the whole spectrum, and there a low R^2 on lambda_max says so.
    """
    rows = list(rows)
    lam = [(r[LAMBDA_MAX_PREDICTOR], r["measured"]) for r in rows if LAMBDA_MAX_PREDICTOR in r]
    quality = [(r["measured"], r[QUALITY_RISE]) for r in rows if r.get(QUALITY_RISE) is not None]
    return {
        "lambda_max": _fit(lam, LAMBDA_MAX_PREDICTOR, "measured") if lam else None,
        "second_order": _fit([(r["predicted"], r["measured"]) for r in rows], "predicted",
                             "measured") if rows else None,
        "quality": _fit(quality, "measured", QUALITY_RISE) if quality else None,
    }
