"""One JSON-friendly sharpness report of a model (what `flatgen sharpness` writes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from flatgen.analysis.density import hessian_spectral_density
from flatgen.analysis.eigen import GroupSpec, hessian_eigenvalues, hessian_eigenvalues_per_layer
from flatgen.analysis.hvp import HessianOperator, hessian_operator
from flatgen.analysis.params import LossFn, ParamSpace, ProgressFn, analysis_mode
from flatgen.analysis.perturbation import (
    ASCENTS,
    PGD_FILTER,
    SAM_ASCENT,
    Ascent,
    PerturbationCurve,
    average_case_sharpness,
    filter_worst_case_sharpness,
    worst_case_sharpness,
)
from flatgen.analysis.trace import TraceMethod, hessian_trace

# stage_progress(stage, done, total)
StageProgressFn = Callable[[str, int, int], None]


class SharpnessSummary(dict):
    """sharpness_summary's JSON-friendly dict, plus what is not JSON: `ascents`, the
    "pgd-filter" worst-case ascents by rho (their delta tensors; empty for "sam-ascent"), which
    the expansion check (flatgen.study.expansion) reuses instead of rerunning them."""

    ascents: dict[float, Ascent]


def _stage(progress: StageProgressFn | None, name: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


def _worst_case(
    model: nn.Module,
    loss_fn: LossFn,
    rhos: Sequence[float],
    *,
    ascent: str,
    steps: int | None,
    restarts: int,
    seed: int,
    progress: ProgressFn | None,
) -> PerturbationCurve:
    kw = {} if steps is None else {"steps": steps}  # None: the ascent's own default
    if ascent == SAM_ASCENT:
        return worst_case_sharpness(model, loss_fn, rhos, progress=progress, **kw)
    return filter_worst_case_sharpness(
        model, loss_fn, rhos, restarts=restarts, seed=seed, progress=progress, **kw
    )


def sharpness_summary(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    top_k: int = 5,
    trace: bool = True,
    density: bool = False,
    rhos: Sequence[float] = (0.01, 0.05, 0.1),
    sigmas: Sequence[float] = (0.01, 0.05, 0.1),
    per_layer: bool = False,
    layer_groups: GroupSpec = "module",
    tol: float = 1e-3,
    max_iter: int = 100,
    trace_method: TraceMethod = "hutch++",
    trace_matvecs: int = 100,
    density_iter: int = 64,
    density_probes: int = 2,
    draws: int = 8,
    ascent: str = PGD_FILTER,
    ascent_steps: int | None = None,
    ascent_restarts: int = 1,
    seed: int = 0,
    operator: HessianOperator | None = None,
    progress: StageProgressFn | None = None,
) -> SharpnessSummary:
    """Flatness measures of loss_fn(model) as a JSON-friendly dict.

    Keys: n_params, loss, lambda_max, top_k, eigen (solver details), trace (or None),
    per_layer ({group: top eigenvalue} or None), worst_case (loss increase in the worst case
    found within balls of radius rho, with the "ascent" used and its "ball": by default
    "pgd-filter", every filter within rho times its weight's norm, an ascent SAM does not run;
    ascent="sam-ascent" gives SAM's own objective, an L2 ball; ascent_steps None keeps the
    ascent's default), average_case (mean/std loss increase under per-filter Gaussian noise
    sigma), density (SLQ grid and density, or None), settings. Empty rhos/sigmas skip those curves;
    top_k=0 skips the eigenvalues. progress(stage, done, total) reports each stage.

    One Hessian operator (one gradient graph, built once) serves the eigenvalues, the trace,
    the per-layer blocks and the density: `operator` if given (a HessianOperator of this model
    and loss_fn, left open so that the expansion check can use it too), else a new one, freed
    before the perturbation curves. The result is a SharpnessSummary (a dict) whose `ascents`
    hold the worst-case perturbations themselves.
    """
    if ascent not in ASCENTS:
        raise ValueError(f"unknown worst-case ascent {ascent!r}; choose from {', '.join(ASCENTS)}")
    with analysis_mode(model), torch.no_grad():
        loss0 = float(loss_fn(model))
    out = SharpnessSummary(n_params=ParamSpace(model).n, loss=loss0)
    out.ascents = {}
    needs_hessian = top_k > 0 or trace or per_layer or density
    with contextlib.ExitStack() as stack:
        op = None
        if needs_hessian:
            op = stack.enter_context(hessian_operator(model, loss_fn, operator=operator))
        _hessian_measures(
            out, model, loss_fn, op, top_k=top_k, trace=trace, density=density,
            per_layer=per_layer, layer_groups=layer_groups, tol=tol, max_iter=max_iter,
            trace_method=trace_method, trace_matvecs=trace_matvecs, density_iter=density_iter,
            density_probes=density_probes, seed=seed, progress=progress,
        )  # fmt: skip
    out["worst_case"] = None
    if rhos:
        curve = _worst_case(
            model, loss_fn, rhos, ascent=ascent, steps=ascent_steps, restarts=ascent_restarts,
            seed=seed, progress=_stage(progress, "worst-case"),
        )  # fmt: skip
        out["worst_case"] = curve.to_dict()
        out.ascents = {a.rho: a for a in curve.ascents}
    out["average_case"] = None
    if sigmas:
        out["average_case"] = average_case_sharpness(
            model, loss_fn, sigmas, draws=draws, seed=seed, progress=_stage(progress, "noise")
        ).to_dict()
    out["settings"] = {
        "seed": seed,
        "tol": tol,
        "max_iter": max_iter,
        "trace_method": trace_method,
        "trace_matvecs": trace_matvecs,
        "density_iter": density_iter,
        "density_probes": density_probes,
        "draws": draws,
        "layer_groups": layer_groups if isinstance(layer_groups, str | int) else "custom",
        "hvp": "double backward, one kept graph",
        "noise_bias_mode": "zero",
        "worst_case_ascent": ascent,
    }
    return out


def _hessian_measures(
    out: dict,
    model: nn.Module,
    loss_fn: LossFn,
    op: HessianOperator | None,
    *,
    top_k: int,
    trace: bool,
    density: bool,
    per_layer: bool,
    layer_groups: GroupSpec,
    tol: float,
    max_iter: int,
    trace_method: TraceMethod,
    trace_matvecs: int,
    density_iter: int,
    density_probes: int,
    seed: int,
    progress: StageProgressFn | None,
) -> None:
    """The Hessian's measures, all from the one operator op, into out."""
    out["lambda_max"], out["top_k"], out["eigen"] = None, [], None
    if top_k > 0:
        eig = hessian_eigenvalues(
            model, loss_fn, k=top_k, tol=tol, max_iter=max_iter, seed=seed,
            operator=op, progress=_stage(progress, "eigenvalues"),
        )  # fmt: skip
        out["top_k"] = eig.tolist()
        out["lambda_max"] = out["top_k"][0]
        out["eigen"] = {
            "which": "LA",
            "tol": tol,
            "n_matvecs": eig.n_matvecs,
            "converged": eig.converged,
            "errors": [float(e) for e in eig.errors],
        }
    out["trace"] = None
    if trace:
        tr = hessian_trace(
            model, loss_fn, method=trace_method, n_matvecs=trace_matvecs, seed=seed,
            operator=op, progress=_stage(progress, "trace"),
        )  # fmt: skip
        out["trace"] = {
            "estimate": tr.estimate,
            "stderr": tr.stderr,
            "method": tr.method,
            "n_matvecs": tr.n_matvecs,
        }
    out["per_layer"] = None
    if per_layer:
        out["per_layer"] = hessian_eigenvalues_per_layer(
            model, loss_fn, groups=layer_groups, tol=tol, max_iter=max_iter, seed=seed,
            operator=op, progress=_stage(progress, "per-layer"),
        )  # fmt: skip
    out["density"] = None
    if density:
        out["density"] = hessian_spectral_density(
            model, loss_fn, n_iter=density_iter, n_probes=density_probes, seed=seed,
            operator=op, progress=_stage(progress, "density"),
        ).to_dict()  # fmt: skip


@contextlib.contextmanager
def rich_progress(transient: bool = True) -> Iterator[StageProgressFn]:
    """A rich progress display with one bar per stage; yields a StageProgressFn."""
    from flatgen.progress import make_progress

    with make_progress(transient=transient) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
