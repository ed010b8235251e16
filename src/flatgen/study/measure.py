"""Every measurement the study takes of one trained method, as a flat dict of numbers."""

from __future__ import annotations

from typing import Any

from flatgen.diffusion import fixed_diffusion_loss_fn
from flatgen.evaluate import FLOOR_SEED, evaluate_quality
from flatgen.metrics import train_floor_sample
from flatgen.study.config import StudyEvaluations
from flatgen.train.run import Run

SHARPNESS_SEED = 0


def sharpness_loss_fn(run: Run, batch: int):
    """The fixed-data diffusion loss every method's flatness is measured on (same data, t, noise)."""
    train, _ = run.data()
    x0 = train_floor_sample(train, min(batch, len(train)), seed=SHARPNESS_SEED)
    return fixed_diffusion_loss_fn(x0, run.schedule, draws=1, seed=SHARPNESS_SEED)


def measure_method(run: Run, weights: str, evals: StudyEvaluations, progress: bool = True) -> dict[str, Any]:
    """Quality at each T'; lambda_max, trace and the loss-under-perturbation curves; the
    robustness suites' headline numbers. Curves and per-suite details go under *_detail keys."""
    from flatgen.analysis import sharpness_summary
    from flatgen.robustness import RobustnessSettings, run_robustness_suite

    out: dict[str, Any] = {}
    quality = evaluate_quality(run, weights=(weights,), steps=evals.quality_steps,
                               samplers=(evals.sampler,),
                               n=evals.n_samples, progress=progress,
                               inception_weights=evals.inception_weights)
    for row in quality["results"]:
        for key in ("w2", "digits_fid", "kid", "inception_fid", "inception_kid"):
            if key in row:
                out[f"{key}@T{row['steps']}"] = row[key]
    out |= {f"floor_{k}": v for k, v in quality["floor"].items() if k != "n"}

    model = run.model(weights)
    if evals.sharpness:
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

    if evals.suites:
        train, test = run.data()
        n = evals.n_samples or len(test)
        # on digits, digits-FID separates models where pixel-space W2 cannot (see README)
        metric = "digits_fid" if tuple(test.shape[1:]) == (1, 8, 8) else "w2"
        settings = RobustnessSettings(**{"n_samples": n, "metric": metric, **evals.robustness})
        floor_ref = train_floor_sample(train, settings.n_samples or n, seed=FLOOR_SEED)
        result = run_robustness_suite({weights: model}, run.schedule, test, floor_ref,
                                      evals.suites, settings, progress=progress)
        summary = result["summary"][weights]
        out |= {k: v for k, v in summary.items() if not isinstance(v, dict)}
        largest = summary.get("robust_epsilon_largest_tried", {})
        for k, v in summary.get("robust_epsilon", {}).items():
            # never degraded within the sweep: count it at the strongest perturbation tried (a
            # lower bound) and flag it, rather than dropping the most robust models
            out[f"robust_eps_{k}"] = v if v is not None or k not in largest else largest[k]
            if v is None and k in largest:
                out[f"robust_eps_{k}_censored"] = 1.0
        if "quant" in result and weights in result["quant"]:
            out[f"{settings.metric}@float"] = result["quant"][weights]["float"].get(settings.metric)
        out["robustness_metric"] = settings.metric
        out["robustness_detail"] = result
    return out
