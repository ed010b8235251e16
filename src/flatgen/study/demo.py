"""The demo study: what `flatgen demo` (and `make demo`) runs on the embedded digits."""

from __future__ import annotations

from flatgen.study.config import StudyConfig

# measured on 2 CPU cores; see benchmarks/RESULTS.md for the wall times
DEMO_TRAIN_STEPS = {False: 1000, True: 200}
DEMO_SAM_RHO = 0.05  # chosen from the rho sweep in benchmarks/RESULTS.md


def demo_study(quick: bool = False, seeds: int = 1) -> StudyConfig:
    """Baseline, EMA, SAM and SAM+EMA on digits, seeds 0..seeds-1; two trainings per seed (EMA
    is tracked, not retrained)."""
    steps = DEMO_TRAIN_STEPS[quick]
    robustness = {"n_samples": 128, "attack_n": 32, "init_n": 16, "noise_draws": 1,
                  "bits": [8, 6, 4], "attack_norms": ["linf"], "attack_timesteps": [100]}
    if quick:  # smaller samples and sweeps: numbers are noisier, the pipeline is the same
        robustness |= {"n_samples": 64, "attack_n": 16, "init_n": 8, "bits": [8, 4],
                       "granularity": ["channel"], "noise_sigmas": [0.02, 0.05],
                       "eps_linf": [0.02, 0.05, 0.1], "init_eps_linf": [0.05, 0.1, 0.2]}
    return StudyConfig.model_validate({
        "name": "digits-demo-quick" if quick else "digits-demo",
        "base": {"train": {"steps": steps, "warmup_steps": min(100, steps // 10)}},
        "overrides": {"sam": [f"method.sam.rho={DEMO_SAM_RHO}"]},
        "methods": ["adm", "ema", "sam", "sam+ema"],
        "seeds": list(range(seeds)),
        "evaluations": {
            "quality_steps": [20, 100],
            "trace_matvecs": 6 if quick else 30,
            "n_samples": 150 if quick else None,
            **({"sharpness_batch": 128, "perturbation_rhos": [0.1, 0.5], "perturbation_sigmas": [0.02, 0.05],
                "perturbation_draws": 2} if quick else {}),
            "suites": ["quant", "attack", "noise"],
            "robustness": robustness,
        },
    })
