"""A study's plan: its units (training runs, listed by the study's kind), one command each, and
a cost model that `flatgen study --plan` prints.

The cost model counts work in U, one forward of the study's model on a batch of 128 (no
gradient), and turns U into seconds with a short calibration on this machine at one torch
thread (what each local job gets), in CPU time (time.process_time), so that other jobs on the
machine do not inflate it: one forward and one real training step of each base
trajectory (flatgen.train.step.train_step, so SAM's second pass is in it), timed. A unit costs

    train_U   = steps x (one step, in U)
    measure_U = sum over the unit's methods of MEASURE_FACTOR x F(evaluations, method)

where F counts the measurement's forward-equivalents at batch 128 (`measure_forwards`): a
forward is 1, a forward+backward GRAD = 3, a Hessian-vector product HVP = 6 (a double
backward, about two gradients), a sampling run of T' steps on n samples T' x n/128. It
counts the steps ladder (each sampler, each T'), the quality runs the ladder does not give,
the exposure hops, the quantization and weight-noise ladders (eval_steps each), the x_t and
x_T PGD attacks, the selection stream's second set of ladders for the selection methods, and
on the fixed sharpness batch: Lanczos (LANCZOS_MATVECS products), the trace, the worst-case
ascents, the noise draws and the expansion check. MEASURE_FACTOR is the ratio of measured to
counted U, calibrated on the quick demo (benchmarks/study_speed.py); the result is an estimate.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flatgen.study.kind import Unit
from flatgen.study.kinds import kind_of

BATCH_U = 128  # U is one forward on this many samples
GRAD, HVP = 3.0, 6.0  # a forward+backward, a Hessian-vector product, in forwards
LANCZOS_MATVECS = 30  # products Lanczos takes to converge for lambda_max (tol 1e-3), typically
WORST_CASE_STEPS = 10  # the pgd-filter ascent's default steps per radius
# measured / counted U of the quick demo's measurement (2100 / 2527 U, all four methods of one
# seed), from `benchmarks/study_speed.py --quick` at OMP_NUM_THREADS=1, load 7-8 on 2 cores,
# 2026-12-02: one loaded run, so the constant is good to perhaps 20%
MEASURE_FACTOR = 0.83


def plan_units(study: Any) -> list[Unit]:
    """The units of a study of any registered kind, in the order they run."""
    return kind_of(study).units(study)


def plan_commands(study_path: Path, study: Any, out: Path) -> list[str]:
    """One shell command per unit, for users who launch runs on their own scheduler."""
    return [f"flatgen study {study_path} --out {out} --only {u.name}" for u in plan_units(study)]


@dataclass(frozen=True)
class UnitCost:
    """The estimated cost of one unit in U and, with the calibration's U, in CPU seconds."""

    train_u: float
    measure_u: float
    forward_s: float  # seconds of one U (1.0 when not calibrated: the U are relative weights)

    @property
    def total_u(self) -> float:
        return self.train_u + self.measure_u

    @property
    def train_s(self) -> float:
        return self.train_u * self.forward_s

    @property
    def measure_s(self) -> float:
        return self.measure_u * self.forward_s

    @property
    def total_s(self) -> float:
        return self.total_u * self.forward_s


def _batches(n: int) -> float:
    return n / BATCH_U


def measure_forwards(evals: Any, *, n: int, selection: bool, expansion: bool = True) -> float:
    """F: the forward-equivalents (in U) of measuring one method with these evaluations; n is
    the robustness sample size (the formula is in the module docstring); selection and
    expansion: whether this method and seed get the selection ladders and the expansion check
    (evaluations.selection_seeds / expansion_seeds)."""
    r, suites = evals.robustness, set(evals.suites)
    ladders = 0.0
    if "steps" in suites:
        ladders += len(r.samplers) * sum(r.steps) * _batches(n)
    if "exposure" in suites:
        ladders += len(r.variance_hops) * sum(r.exposure_steps) * _batches(n)
    if "quant" in suites:
        levels = len(r.bits) * len(r.granularity) * len(r.quant_schemes)
        ladders += levels * r.eval_steps * _batches(n)
    if "noise" in suites:
        ladders += len(r.noise_sigmas) * r.noise_draws * r.eval_steps * _batches(n)
    if "attack" in suites:
        eps = {"linf": (r.eps_linf, r.init_eps_linf), "l2": (r.eps_l2, r.init_eps_l2)}
        init_steps = r.init_pgd_steps or r.pgd_steps
        for norm in r.attack_norms:
            xt, xT = eps[norm]
            ladders += (len(r.attack_timesteps) * len(xt) * (r.pgd_steps * r.pgd_restarts * GRAD
                                                             + 1) * _batches(r.attack_n))
            ladders += (len(xT) * (init_steps * GRAD + 1) * r.init_sampling_steps
                        * _batches(r.init_n) + len(xT) * r.init_sampling_steps * _batches(n))
    total = ladders * (2 if selection else 1)
    reused = "steps" in suites and evals.sampler in r.samplers and set(
        evals.quality_steps) <= set(r.steps)
    if not reused:
        total += sum(evals.quality_steps) * _batches(evals.n_samples or n)
    if evals.sharpness:
        b = _batches(evals.sharpness_batch)
        rhos, sigmas = len(evals.perturbation_rhos), len(evals.perturbation_sigmas)
        total += b * (1 + (LANCZOS_MATVECS + evals.trace_matvecs) * HVP
                      + rhos * WORST_CASE_STEPS * GRAD + sigmas * evals.perturbation_draws)
        if evals.expansion and expansion:  # one HVP and forward per perturbation (the worst-case
            # ascents are the summary's own, reused)
            perturbations = rhos + len(r.bits) * len(r.granularity) + len(r.noise_sigmas)
            total += b * perturbations * (HVP + 1)
    return total * MEASURE_FACTOR


def _sample_size(study: Any) -> int:
    r, evals = study.evaluations.robustness, study.evaluations
    if "n_samples" in r.model_fields_set and r.n_samples:
        return r.n_samples
    if evals.n_samples:
        return evals.n_samples
    from flatgen.data import load_dataset  # the test set's size: the default sample size
    from flatgen.study.config import unit_config

    unit = plan_units(study)[0]
    return len(load_dataset(unit_config(study, unit.base, unit.seed).data)[1])


def _median_time(fn, repeats: int) -> float:
    fn()  # untimed: first-call allocations
    times = []
    for _ in range(repeats):  # CPU time of this (one-thread) process: steady under load
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def _step_seconds(cfg: Any, train_x: Any, schedule: Any, model: Any, repeats: int) -> float:
    """One real optimizer step of this training config (SAM's two passes included), timed."""
    from flatgen.diffusion import diffusion_loss
    from flatgen.train.loop import micro_batches
    from flatgen.train.method import Method
    from flatgen.train.schedule import make_accelerator
    from flatgen.train.step import train_step

    method = Method(cfg.method, cfg.train)
    optimizer = method.build_optimizer(model.parameters())
    accelerator = make_accelerator(cpu=True)
    batches = micro_batches(cfg, train_x, schedule, step=0, rank=0, world=1)

    def loss_fn(net, mb):
        x0, t, noise, ip_noise = mb
        return diffusion_loss(net, x0, schedule, t=t, noise=noise, ip_gamma=method.ip_gamma,
                              ip_noise=ip_noise)

    return _median_time(lambda: train_step(model, optimizer, batches, loss_fn=loss_fn,
                                           accelerator=accelerator,
                                           grad_clip=cfg.train.grad_clip), repeats)


def calibrate(study: Any, *, repeats: int = 3) -> tuple[float, dict[str, float]]:
    """(seconds of one U, {base: one training step in U}) at one torch thread: the median of
    `repeats` timed forwards, and of `repeats` real training steps, after one untimed each."""
    import torch

    from flatgen.data import load_dataset
    from flatgen.diffusion import schedule_from_config
    from flatgen.models import model_from_config
    from flatgen.study.config import unit_config

    steps: dict[str, float] = {}
    forward_s = 0.0
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)  # as each local job runs
    try:
        for unit in plan_units(study):
            if unit.base in steps:
                continue
            cfg = unit_config(study, unit.base, unit.seed)
            train_x = load_dataset(cfg.data)[0]
            schedule = schedule_from_config(cfg.diffusion)
            model = model_from_config(cfg.model, tuple(train_x.shape[1:]))
            if not forward_s:
                x = torch.randn(BATCH_U, *train_x.shape[1:])
                t = torch.randint(0, schedule.timesteps, (BATCH_U,))
                model.eval()
                with torch.no_grad():
                    forward_s = _median_time(lambda: model(x, t), repeats)  # noqa: B023
                model.train()
            steps[unit.base] = _step_seconds(cfg, train_x, schedule, model, repeats) / forward_s
    finally:  # leave the caller's threads and random stream as they were
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)
    return forward_s, steps


def estimate_costs(study: Any, *, calibrate_here: bool = True) -> dict[str, UnitCost] | None:
    """unit name -> UnitCost for a diffusion study (None for other kinds). Without the
    calibration (calibrate_here False) a step counts GRAD x passes x batch/128 U and a U one
    second: relative weights, enough to order jobs and scale the progress's time left."""
    from flatgen.study.config import StudyConfig, unit_config

    if not isinstance(study, StudyConfig):
        return None
    evals = study.evaluations
    n = _sample_size(study)
    if calibrate_here:
        forward_s, step_u = calibrate(study)
    else:
        forward_s, step_u = 1.0, {}
    costs = {}
    for unit in plan_units(study):
        cfg = unit_config(study, unit.base, unit.seed)
        passes = 2 if cfg.method.sam is not None else 1
        step = step_u.get(unit.base, GRAD * passes * _batches(cfg.train.batch_size))
        def on(seeds: list[int] | None, seed: int = unit.seed) -> bool:
            return seeds is None or seed in seeds

        measure = sum(measure_forwards(
            evals, n=n, selection=m in evals.selection_methods and on(evals.selection_seeds),
            expansion=on(evals.expansion_seeds)) for m in unit.methods)
        costs[unit.name] = UnitCost(cfg.train.steps * step, measure, forward_s)
    return costs


def wall_time(seconds: list[float], jobs: int) -> float:
    """The makespan of these job lengths on `jobs` processes, longest first to the first free
    one (what run_units does: the order LPT scheduling takes)."""
    free = [0.0] * max(1, jobs)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def format_costs(costs: dict[str, UnitCost], *, jobs: int) -> str:
    """The estimate --plan prints: CPU seconds per unit (training + measurement), the total,
    and the wall time on `jobs` one-thread processes; shell comments, so that the plan's
    output stays a script of its commands."""
    forward_s = next(iter(costs.values())).forward_s
    lines = [f"# cost estimate (calibrated here: one U = one forward on a batch of {BATCH_U} = "
             f"{forward_s * 1e3:.1f} ms CPU at 1 thread; an estimate, see flatgen.study.plan):"]
    for name, c in costs.items():
        lines.append(f"#   {name}: {_s(c.total_s)} s per unit (train {_s(c.train_s)} s, measure "
                     f"{_s(c.measure_s)} s; {c.total_u:.0f} U)")
    total = sum(c.total_s for c in costs.values())
    # one-thread processes beyond the cores share them: no faster than one per core
    cores = os.cpu_count() or 1
    wall = wall_time([c.total_s for c in costs.values()], min(jobs, cores))
    shared = f" ({cores} cores: {cores} at a time)" if jobs > cores else ""
    lines.append(f"#   total: {_s(total)} CPU s; about {wall / 60:.1f} min wall with --jobs "
                 f"{jobs} on idle cores{shared}")
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"


__all__ = ["Unit", "UnitCost", "calibrate", "estimate_costs", "format_costs",
           "measure_forwards", "plan_commands", "plan_units", "wall_time"]
