"""Every measurement the study takes of one trained method, as a flat dict of numbers, plus
metrics["ladders"] (flatgen.records names every key)."""

from __future__ import annotations

from typing import Any

from flatgen import records as keys
from flatgen.evaluate import FLOOR_SEED, evaluate_quality
from flatgen.flatness import SHARPNESS_SEED, sharpness_loss_fn
from flatgen.metrics import train_floor_sample
from flatgen.robustness.settings import RobustnessSettings
from flatgen.study.config import StudyEvaluations
from flatgen.train.run import Run

QUALITY_KEYS = ("w2", "digits_fid", "kid", "inception_fid", "inception_kid")


def robustness_settings(run: Run, evals: StudyEvaluations) -> RobustnessSettings:
    """The study's robustness settings for one run: n_samples defaults to the study's sample
    size, metric to digits_fid on digits (it separates digits models; W2 in pixels does not),
    else w2. Fields the study config sets explicitly win."""
    _, test = run.data()
    given = evals.robustness.model_fields_set
    update: dict[str, Any] = {}
    if "n_samples" not in given:
        update["n_samples"] = evals.n_samples or len(test)
    if "metric" not in given:
        update["metric"] = "digits_fid" if tuple(test.shape[1:]) == (1, 8, 8) else "w2"
    return evals.robustness.model_copy(update=update)


def measure_method(
    run: Run, weights: str, evals: StudyEvaluations, *, method: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Quality at each T'; lambda_max, trace and the loss-under-perturbation curves; the
    robustness suites' scalars and ladder records (with the selection stream when `method` is
    one of evals.selection_methods). Curves and per-suite details go under *_detail keys.

    The quality at evals.quality_steps comes from the steps ladder's own runs when it has those
    T' with the study's sampler and sample size (the same numbers, sampled once), unless
    Inception metrics are asked for (the suites do not compute them)."""
    out: dict[str, Any] = {}
    model = run.model(weights)
    result = None
    if evals.suites:
        result = _robustness(run, weights, evals, method=method, progress=progress)
    out |= _quality(run, weights, evals, result, progress=progress)
    if evals.sharpness:
        out |= _sharpness(run, model, evals)
    if evals.sharpness and evals.expansion:  # part of the flatness analysis
        out |= _expansion(run, model, evals)
    if result is not None:
        out |= _robustness_metrics(result, weights)
    return out


def _robustness(
    run: Run, weights: str, evals: StudyEvaluations, *, method: str | None, progress: bool
) -> dict[str, Any]:
    from flatgen.robustness import run_robustness_suite

    train, test = run.data()
    settings = robustness_settings(run, evals)
    floor_ref = train_floor_sample(train, settings.n_samples or len(test), seed=FLOOR_SEED)
    return run_robustness_suite(
        {weights: run.model(weights)}, run.schedule, test, floor_reference=floor_ref,
        suites=evals.suites, settings=settings, progress=progress,
        selection=method is not None and method in evals.selection_methods,
    )


def _quality(
    run: Run, weights: str, evals: StudyEvaluations, result: dict[str, Any] | None, *,
    progress: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _, test = run.data()
    steps = (result or {}).get("steps", {}).get(weights, {}).get(evals.sampler)
    n = evals.n_samples or len(test)
    reuse = steps and result["n_samples"] == n and evals.inception_weights is None
    if reuse and set(evals.quality_steps) <= set(steps["steps"]):
        rows = [q | {"steps": k} for k, q in zip(steps["steps"], steps["quality"], strict=True)
                if k in evals.quality_steps]
        floor = {k: v for k, v in rows[0].items() if "_floor" in k}
    else:
        quality = evaluate_quality(run, weights=(weights,), steps=evals.quality_steps,
                                   samplers=(evals.sampler,), n=evals.n_samples, progress=progress,
                                   inception_weights=evals.inception_weights)
        rows, floor = quality["results"], {k: v for k, v in quality["floor"].items() if k != "n"}
    for row in rows:
        for key in QUALITY_KEYS:
            if key in row:
                out[keys.quality_key(key, row["steps"])] = row[key]
    return out | {f"floor_{k}": v for k, v in floor.items()}


def _sharpness(run: Run, model: Any, evals: StudyEvaluations) -> dict[str, Any]:
    from flatgen.analysis import sharpness_summary

    out: dict[str, Any] = {}
    loss_fn = sharpness_loss_fn(run, evals.sharpness_batch)
    flat = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=evals.trace_matvecs,
                             rhos=evals.perturbation_rhos, sigmas=evals.perturbation_sigmas,
                             draws=evals.perturbation_draws, seed=SHARPNESS_SEED)
    out["lambda_max"] = flat["lambda_max"]
    out["hessian_trace"] = flat["trace"]["estimate"]
    out["sharpness_batch_loss"] = flat["loss"]
    curves = {k: flat[k] for k in ("worst_case", "average_case") if flat[k] is not None}
    for key, radius, name in (("worst_case", "rho", "worst"), ("average_case", "sigma", "noise")):
        if key in curves:
            for r, inc in zip(curves[key][radius], curves[key]["increase"], strict=True):
                out[f"loss_increase_{name}@{r:g}"] = inc
    out["perturbation_detail"] = curves
    return out


def _expansion(run: Run, model: Any, evals: StudyEvaluations) -> dict[str, Any]:
    """Measured vs second-order-predicted loss rise for the study's weight perturbations."""
    from flatgen.analysis.expansion import expansion_summary
    from flatgen.study.expansion import expansion_check

    rows = expansion_check(model, sharpness_loss_fn(run, evals.sharpness_batch),
                           settings=robustness_settings(run, evals),
                           rhos=evals.perturbation_rhos)
    summary = expansion_summary(rows)
    return {keys.EXPANSION: rows, keys.EXPANSION_SHARE: summary["share"]}


def _robustness_metrics(result: dict[str, Any], weights: str) -> dict[str, Any]:
    summary = result["summary"][weights]
    out = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    largest = summary.get("robust_epsilon_largest_tried", {})
    for k, v in summary.get("robust_epsilon", {}).items():
        # never degraded within the sweep: count it at the strongest perturbation tried (a
        # lower bound) and flag it, rather than dropping the most robust models
        out[keys.robust_eps_key(k)] = v if v is not None or k not in largest else largest[k]
        if v is None and k in largest:
            out[keys.robust_eps_key(k) + "_censored"] = 1.0
    out[keys.LADDERS] = result["ladders"][weights]
    out[keys.ROBUSTNESS_METRIC] = result["metric"]
    out[keys.ROBUSTNESS_DETAIL] = result
    return out
