"""Every measurement the study takes of one trained method, as a flat dict of numbers, plus
metrics[LADDERS] (flatgen.records names every key and types the record).

The evaluation noise (sampling noise of every ladder, its selection stream, the attacked images)
is drawn per TRAINING seed: common to the models compared within a seed, so the pairing
removes it, and new across seeds, so the test sees its variance. A draw frozen across seeds would
add the same error to every pair, which no test can see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flatgen import records as keys
from flatgen.evaluate import FLOOR_SEED, evaluate_quality
from flatgen.flatness import SHARPNESS_SEED, sharpness_loss_fn
from flatgen.io import atomic_write
from flatgen.metrics import train_floor_sample
from flatgen.robustness.settings import RobustnessSettings
from flatgen.study.config import StudyEvaluations
from flatgen.train.run import Run

GRID_N = 36  # samples in the grid each method saves for the report


def evaluation_seed(base: int, train_seed: int) -> int:
    """The evaluation noise seed of one training seed: the config's base seed and the training
    seed together, so every training seed gets its own draw and models of one seed share it."""
    return int(base) * 1_000_003 + int(train_seed)


def on_seeds(seeds: list[int] | None, seed: int) -> bool:
    return seeds is None or seed in seeds


def robustness_settings(run: Run, evals: StudyEvaluations) -> RobustnessSettings:
    """The study's robustness settings for one run: the evaluation seed of the run's training
    seed; n_samples defaults to the study's sample size, metric to digits_fid on digits (it
    separates digits models; W2 in pixels does not), else w2. Fields the study config sets
    explicitly win (the seed is always combined with the training seed)."""
    _, test = run.data()
    given = evals.robustness.model_fields_set
    update: dict[str, Any] = {"seed": evaluation_seed(evals.robustness.seed, run.cfg.train.seed)}
    if "n_samples" not in given:
        update["n_samples"] = evals.n_samples or len(test)
    if "metric" not in given:
        update["metric"] = "digits_fid" if tuple(test.shape[1:]) == (1, 8, 8) else "w2"
    return evals.robustness.model_copy(update=update)


def measure_method(
    run: Run, weights: str, evals: StudyEvaluations, *, method: str | None = None,
    progress: bool = True, grid: Path | None = None,
) -> dict[str, Any]:
    """Quality at each T'; lambda_max, trace and the loss-under-perturbation curves; the
    robustness suites' scalars and ladder records (with the selection stream when `method` is
    one of evals.selection_methods and the run's seed one of evals.selection_seeds). Curves and
    per-suite details go under *_detail keys. grid: where to save a grid of samples for the
    report (the report runs no model).

    The quality at evals.quality_steps comes from the steps ladder's own runs when it has those
    T' with the study's sampler and sample size (the same numbers, sampled once), unless
    Inception metrics are asked for (the suites do not compute them)."""
    out: dict[str, Any] = {}
    model = run.model(weights)
    seed = run.cfg.train.seed
    result = None
    if evals.suites:
        result = _robustness(run, weights, evals, method=method, progress=progress)
    out |= _quality(run, weights, evals, result, progress=progress)
    if evals.sharpness:  # the expansion check is part of the flatness analysis
        out |= _flatness(run, model, evals, expansion=evals.expansion
                         and on_seeds(evals.expansion_seeds, seed), result=result, weights=weights)
    if result is not None:
        out |= _robustness_metrics(result, weights)
    if grid is not None:
        out[keys.SAMPLE_GRID] = str(_sample_grid(run, model, evals, grid))
    return out


def _sample_grid(run: Run, model: Any, evals: StudyEvaluations, path: Path) -> Path | None:
    """GRID_N samples at the fewest quality steps, from the seed's evaluation noise."""
    from flatgen.diffusion import generate
    from flatgen.plotting import image_grid

    _, test = run.data()
    if test.ndim != 4:
        return None
    x = generate(model, run.schedule, n=GRID_N, shape=tuple(test.shape[1:]),
                 steps=min(evals.quality_steps), sampler=evals.sampler,
                 seed=evaluation_seed(evals.robustness.seed, run.cfg.train.seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda p: image_grid(x, nrow=6, scale=4).save(p, format="png"))


def _robustness(
    run: Run, weights: str, evals: StudyEvaluations, *, method: str | None, progress: bool
) -> dict[str, Any]:
    from flatgen.robustness import run_robustness_suite

    train, test = run.data()
    settings = robustness_settings(run, evals)
    floor_ref = train_floor_sample(train, settings.n_samples or len(test), seed=FLOOR_SEED)
    selection = (method is not None and method in evals.selection_methods
                 and on_seeds(evals.selection_seeds, run.cfg.train.seed))
    return run_robustness_suite(
        {weights: run.model(weights)}, run.schedule, test, floor_reference=floor_ref,
        suites=evals.suites, settings=settings, progress=progress, selection=selection,
        inception_weights=evals.inception_weights,
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
        for key in keys.QUALITY_KEYS:
            if key in row:
                out[keys.quality_key(key, row["steps"])] = row[key]
    return out | {keys.floor_key(k): v for k, v in floor.items()}


def _flatness(run: Run, model: Any, evals: StudyEvaluations, *, expansion: bool,
              result: dict[str, Any] | None, weights: str) -> dict[str, Any]:
    """The sharpness summary and (expansion: descriptive, on the configured seeds only) the
    second-order check on one fixed batch drawn for the training seed, from one Hessian operator
    (one gradient graph); the check reuses the summary's worst-case ascents."""
    from flatgen.analysis import HessianOperator

    seed = evaluation_seed(SHARPNESS_SEED, run.cfg.train.seed)
    loss_fn = sharpness_loss_fn(run, evals.sharpness_batch, seed=seed)
    with HessianOperator(model, loss_fn) as op:
        flat, out = _sharpness(model, loss_fn, evals, op, seed=seed)
        if expansion:
            out |= _expansion(run, model, loss_fn, evals, flat, op, seed=seed,
                              ladders=((result or {}).get(keys.LADDERS) or {}).get(weights, {}))
    return out


def _sharpness(model: Any, loss_fn: Any, evals: StudyEvaluations, op: Any, *,
               seed: int) -> tuple[Any, dict[str, Any]]:
    from flatgen.analysis import sharpness_summary

    out: dict[str, Any] = {}
    flat = sharpness_summary(model, loss_fn, top_k=1, trace_matvecs=evals.trace_matvecs,
                             rhos=evals.perturbation_rhos, sigmas=evals.perturbation_sigmas,
                             draws=evals.perturbation_draws, seed=seed, operator=op)
    out[keys.LAMBDA_MAX] = flat[keys.LAMBDA_MAX]  # the summary's field is the record's key
    out[keys.HESSIAN_TRACE] = flat["trace"]["estimate"]
    out[keys.SHARPNESS_BATCH_LOSS] = flat["loss"]
    curves = {k: flat[k] for k in ("worst_case", "average_case") if flat[k] is not None}
    for key, radius, name in (("worst_case", "rho", keys.WORST),
                              ("average_case", "sigma", keys.NOISE)):
        if key in curves:
            for r, inc in zip(curves[key][radius], curves[key]["increase"], strict=True):
                out[keys.loss_increase_key(name, r)] = inc
    out[keys.PERTURBATION_DETAIL] = curves
    return flat, out


def _expansion(run: Run, model: Any, loss_fn: Any, evals: StudyEvaluations, flat: Any,
               op: Any, *, seed: int, ladders: dict[str, Any]) -> dict[str, Any]:
    """Measured vs second-order-predicted loss rise for the study's weight perturbations, and
    what lambda_max alone predicts of it (the regressions of analysis.expansion)."""
    from flatgen.analysis.expansion import expansion_regression, expansion_summary
    from flatgen.study.expansion import attach_quality_rise, expansion_check

    rows = expansion_check(model, loss_fn, settings=robustness_settings(run, evals),
                           rhos=evals.perturbation_rhos, seed=seed, ascents=flat.ascents,
                           operator=op, lambda_max=flat[keys.LAMBDA_MAX])
    rows = attach_quality_rise(rows, ladders)
    reg = expansion_regression(rows)
    return {keys.EXPANSION: rows, keys.EXPANSION_SHARE: expansion_summary(rows)["share"],
            keys.EXPANSION_REGRESSION: {k: ({f: v[f] for f in ("slope", "intercept", "r2", "n")}
                                            if isinstance(v, dict) else v)
                                        for k, v in reg.items()}}


def _robustness_metrics(result: dict[str, Any], weights: str) -> dict[str, Any]:
    summary = result["summary"][weights]
    out = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    largest = summary.get("robust_epsilon_largest_tried", {})
    for k, v in summary.get("robust_epsilon", {}).items():
        # never degraded within the sweep: count it at the strongest perturbation tried (a
        # lower bound) and flag it, rather than dropping the most robust models
        out[keys.robust_eps_key(k)] = v if v is not None or k not in largest else largest[k]
        if v is None and k in largest:
            out[keys.censored_key(keys.robust_eps_key(k))] = 1.0
    out[keys.LADDERS] = result[keys.LADDERS][weights]
    out[keys.ROBUSTNESS_METRIC] = result["metric"]
    out[keys.ROBUSTNESS_DETAIL] = result
    return out
