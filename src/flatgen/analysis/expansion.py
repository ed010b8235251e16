"""Test the second-order argument: does L(w + delta) - L(w) ~ g.delta + 0.5 delta.H.delta hold?

The claim that flat minima are robust rests on this expansion. For a weight perturbation whose
delta is known (weight quantization, weight noise, a worst case in a ball), loss_rise_check
measures the real rise of loss_fn on its fixed batch and predicts it from one gradient and one
Hessian-vector product (flatgen.analysis.hvp) at w. expansion_summary says where the prediction
holds (within a relative tolerance), by perturbation kind and by size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from flatgen.analysis.hvp import HessianOperator, HVPMethod
from flatgen.analysis.params import LossFn, ParamSpace, analysis_mode, functional_loss

# A known weight perturbation: per-parameter tensors (ParamSpace order, the model's trainable
# parameters), one flat vector, or a callable that perturbs a copy of the model in place (or
# returns a perturbed module with the same parameter names).
Perturbation = Sequence[torch.Tensor] | torch.Tensor | Callable[[nn.Module], nn.Module | None]

DEFAULT_TOLERANCE = 0.25  # the expansion "holds" where |predicted - measured| <= 25% of measured


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
) -> list[dict]:
    """Measured and second-order-predicted loss rise of loss_fn for each known perturbation.

    One dict per perturbation: name, kind (default: the name), measured = L(w + delta) - L(w),
    predicted = linear + quadratic with linear = g.delta and quadratic = 0.5 delta.H.delta (g
    and H at w, one Hessian-vector product each), delta_norm = ||delta||_2, rel_error =
    |predicted - measured| / |measured| (None where measured is 0 and predicted is not), loss0
    = L(w) and loss_eps, the float resolution of the measured rise (machine epsilon * |L(w)|;
    rises near it are rounding). A Mapping gives the names. Losses are evaluated with dropout
    off and BatchNorm on running statistics; the model is not modified.
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
    with HessianOperator(model, loss_fn, method=method) as op:
        grad, loss0 = op.gradient(), op.loss
        eps = torch.finfo(space.dtype).eps * abs(loss0)
        for name, kind, delta in zip(names, kinds, deltas, strict=True):
            with analysis_mode(model), torch.no_grad():
                loss1 = float(functional_loss(model, loss_fn, space.to_dict(w + delta)))
            linear = float(grad @ delta)
            quadratic = 0.5 * float(delta @ op.matvec(delta))
            measured, predicted = loss1 - loss0, linear + quadratic
            rows.append({
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
            })  # fmt: skip
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
