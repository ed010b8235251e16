"""Flatness analysis: Hessian eigenvalues, trace and spectral density, perturbation sharpness,
and 1-D/2-D loss landscapes of a loss on fixed data.

Every function takes (model, loss_fn) with loss_fn(model) -> scalar on a FIXED batch (e.g.
flatgen.diffusion.fixed_diffusion_loss_fn). Losses are evaluated with dropout off and
BatchNorm on running statistics; the model's modes and weights are left as they were.
loss_rise_check tests the second-order expansion behind the flatness argument. Plot functions
(plot_landscape, plot_perturbation, plot_density, plot_sharpness, plot_expansion,
plot_expansion_regression) load matplotlib on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flatgen.analysis.batched import losses_at
from flatgen.analysis.density import SpectralDensity, hessian_spectral_density, slq
from flatgen.analysis.directions import Filters, filter_normalize, random_direction
from flatgen.analysis.eigen import (
    hessian_eigenvalues,
    hessian_eigenvalues_per_layer,
    parameter_groups,
)
from flatgen.analysis.expansion import (
    delta_between,
    expansion_regression,
    expansion_summary,
    expansion_title,
    loss_rise_check,
)
from flatgen.analysis.hvp import HessianOperator, MatrixOperator
from flatgen.analysis.lanczos import EigenResult, Lanczos, lanczos_eigs
from flatgen.analysis.landscape import Landscape, load_landscape, loss_landscape, save_landscape
from flatgen.analysis.params import ParamSpace, analysis_mode
from flatgen.analysis.perturbation import (
    ASCENTS,
    Ascent,
    PerturbationCurve,
    average_case_sharpness,
    filter_pgd_ascent,
    filter_worst_case_sharpness,
    worst_case_sharpness,
)
from flatgen.analysis.summary import SharpnessSummary, rich_progress, sharpness_summary
from flatgen.analysis.trace import TraceResult, hessian_trace, hutchinson, hutchpp

if TYPE_CHECKING:
    from flatgen.analysis.plots import (
        plot_density,
        plot_expansion,
        plot_expansion_regression,
        plot_landscape,
        plot_perturbation,
        plot_sharpness,
    )

_PLOTS = (
    "plot_density",
    "plot_expansion",
    "plot_expansion_regression",
    "plot_landscape",
    "plot_perturbation",
    "plot_sharpness",
)


def __getattr__(name: str) -> Any:
    # matplotlib is imported only when a plot is asked for
    if name in _PLOTS:
        from flatgen.analysis import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ASCENTS",
    "Ascent",
    "EigenResult",
    "Filters",
    "HessianOperator",
    "Lanczos",
    "Landscape",
    "MatrixOperator",
    "ParamSpace",
    "PerturbationCurve",
    "SharpnessSummary",
    "SpectralDensity",
    "TraceResult",
    "analysis_mode",
    "average_case_sharpness",
    "delta_between",
    "expansion_regression",
    "expansion_summary",
    "expansion_title",
    "filter_normalize",
    "filter_pgd_ascent",
    "filter_worst_case_sharpness",
    "hessian_eigenvalues",
    "hessian_eigenvalues_per_layer",
    "hessian_spectral_density",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos_eigs",
    "load_landscape",
    "loss_landscape",
    "loss_rise_check",
    "losses_at",
    "parameter_groups",
    "plot_density",
    "plot_expansion",
    "plot_expansion_regression",
    "plot_landscape",
    "plot_perturbation",
    "plot_sharpness",
    "random_direction",
    "rich_progress",
    "save_landscape",
    "sharpness_summary",
    "slq",
    "worst_case_sharpness",
]
