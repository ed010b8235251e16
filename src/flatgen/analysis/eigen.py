"""Top Hessian eigenvalues of a model's loss, for the whole network and per layer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from flatgen.analysis.hvp import HessianOperator, HVPMethod, hessian_operator
from flatgen.analysis.lanczos import EigenResult, Which, lanczos_eigs
from flatgen.analysis.params import LossFn, ProgressFn, report

GroupSpec = str | int | Callable[[str], str] | Mapping[str, Sequence[str]]


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    k: int = 5,
    *,
    which: Which = "LA",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
    progress: ProgressFn | None = None,
) -> EigenResult:
    """Top-k Hessian eigenvalues and eigenvectors of loss_fn(model) on its fixed data.

    Lanczos with full reorthogonalization on Hessian-vector products. which: "LA" largest
    algebraic (default), "LM" largest magnitude, "SA" smallest (most negative). Stops when each
    value's estimated relative error is below tol, or after max_iter products. Returns an
    EigenResult that unpacks as (vals, vecs): vals (k,) float64, vecs (k, n) flat unit vectors
    over the trainable parameters in model.named_parameters() order. `operator`: a
    HessianOperator of this model and loss to use (and leave open) instead of a new one.
    """
    with hessian_operator(model, loss_fn, method=method, operator=operator) as op:
        return lanczos_eigs(
            op, k=k, which=which, tol=tol, max_iter=max_iter, seed=seed, progress=progress
        )


def parameter_groups(model: nn.Module, by: GroupSpec = "module") -> dict[str, list[str]]:
    """Group trainable parameter names: by owning "module" (weight and bias together), by
    "param", by the first `depth` parts of the owning module's name (an int), by a function
    name -> group, or as given ({group: [names]})."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(by, Mapping):
        return {g: list(ns) for g, ns in by.items()}

    def owner(name: str) -> str:
        return name.rsplit(".", 1)[0] if "." in name else name

    if by == "param":
        key: Callable[[str], str] = lambda n: n  # noqa: E731
    elif by == "module":
        key = owner
    elif isinstance(by, int) and not isinstance(by, bool):
        if by < 1:
            raise ValueError(f"group depth must be >= 1, got {by}")
        key = lambda n: ".".join(owner(n).split(".")[:by])  # noqa: E731
    elif callable(by):
        key = by
    else:
        raise ValueError(f"unknown grouping {by!r}; use 'module', 'param', a depth, or a mapping")
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(key(n), []).append(n)
    return groups


def hessian_eigenvalues_per_layer(
    model: nn.Module,
    loss_fn: LossFn,
    groups: GroupSpec = "module",
    *,
    which: Which = "LA",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """Top eigenvalue of each diagonal Hessian block (one block per parameter group).

    The gradient graph is built once and shared by all groups; see parameter_groups for
    `groups`. Costs about 5-20 Hessian-vector products per group (a U-Net has ~70 modules
    with parameters; an int depth gives fewer, coarser groups). Returns {group: eigenvalue}
    in model order. `operator`: a HessianOperator of this model and loss to share.
    """
    spec = parameter_groups(model, groups)
    out: dict[str, float] = {}
    with hessian_operator(model, loss_fn, method=method, operator=operator) as op:
        for i, (name, params) in enumerate(spec.items()):
            res = lanczos_eigs(
                op.block(params), k=1, which=which, tol=tol, max_iter=max_iter, seed=seed
            )
            out[name] = float(res.vals[0])
            report(progress, i + 1, len(spec))
    return out
