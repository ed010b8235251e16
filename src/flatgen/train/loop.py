"""The Accelerate-based training loop for diffusion models.

Determinism: everything random in step s (batch indices, timesteps, noise, dropout) is drawn
from generators seeded by (seed, s), so a run resumed from a checkpoint replays exactly the
steps an uninterrupted run would take, and ends with bitwise-equal weights.

Failures: the run directory, the checkpoint to resume from and the data are all checked before
anything is written (flatgen.train.rundir); a non-finite loss or gradient stops training with
TrainingDiverged, keeping the last (finite) checkpoint.

What the run leaves on disk (metrics, checkpoints, summary, and the kill-point test hooks) is
train/writer.py's; the model, optimizer and their restoring, train/setup.py's.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from flatgen.config import Config
from flatgen.data import load_dataset
from flatgen.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    draw_training_noise,
    schedule_from_config,
)
from flatgen.errors import InputError, TrainingDiverged
from flatgen.optim.wrm import diffusion_per_sample_loss, wrm_perturb
from flatgen.train.compile import (
    CACHE_DIR,
    compile_wanted,
    compiled,
    compiler_missing,
    inductor_cache,
)
from flatgen.train.killpoints import kill_point
from flatgen.train.rundir import RunDirError, finished_result, plan_run, prepare_run_dir
from flatgen.train.schedule import lr_lambda as schedule_lr_lambda
from flatgen.train.schedule import make_accelerator as shared_accelerator
from flatgen.train.setup import Trainer, build_trainer
from flatgen.train.writer import LOSS_WINDOW, RunWriter

__all__ = ["LOSS_WINDOW", "RunDirError", "TrainResult", "lr_lambda", "make_accelerator",
           "micro_batches", "seed_dropout", "step_seed", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    seconds: float
    it_per_s: float


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for (run seed, step, stream)."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1)


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    """Linear warm-up, then constant or cosine decay to 10% of the peak (train/schedule.py)."""
    return schedule_lr_lambda(total=cfg.train.steps, warmup=cfg.train.warmup_steps,
                              decay=cfg.train.lr_decay)


def make_accelerator(cfg: Config, project_dir: Path | None = None) -> Accelerator:
    from flatgen.train.tracking import tracker_for

    return shared_accelerator(
        cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision,
        log_with=tracker_for(cfg.train.log_with),
        project_dir=str(project_dir / "logs") if project_dir else None)


def micro_batches(cfg: Config, train_x: torch.Tensor, schedule: NoiseSchedule, *, step: int,
                   rank: int, world: int) -> list[tuple[torch.Tensor, ...]]:
    """This process's micro-batches of step `step`: (x0, t, noise, ip_noise) each."""
    g = torch.Generator().manual_seed(step_seed(cfg.train.seed, step))
    idx = torch.randperm(len(train_x), generator=g)[: cfg.train.batch_size]
    if len(idx) < cfg.train.batch_size:  # tiny datasets: sample with replacement
        idx = torch.randint(len(train_x), (cfg.train.batch_size,), generator=g)
    x0 = train_x[idx]
    t, noise, ip_noise = draw_training_noise(x0, schedule, g)
    # the global batch is drawn identically on every process, then sharded
    shard = [v[rank::world] for v in (x0, t, noise, ip_noise)]
    k = cfg.train.grad_accum
    return [tuple(v.chunk(k)[i] for v in shard) for i in range(k)]


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generators that dropout draws from on `device` (the CPU's, and the current
    accelerator's).

    torch.manual_seed would do it, but it also queues a seed for every lazily initialized
    backend (CUDA, XPU, MTIA on a CPU machine), formatting a stack trace each time: per step,
    that is measurable overhead. The CPU generator ends in the same state either way.
    """
    torch.default_generator.manual_seed(seed)
    if device.type != "cpu":  # the device's own generator (CUDA, MPS, XPU): initialized by now
        torch.get_device_module(device.type).manual_seed(seed)


class _StopFlag:
    """First Ctrl-C: finish the current step, save, exit. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _diverged(step: int, result: Any, lr: float, saved: int | None) -> TrainingDiverged:
    what = (f"the loss is {result.loss}" if not math.isfinite(result.loss)
            else f"the gradient norm is {result.grad_norm}")
    kept = (f"the last finite checkpoint (step {saved}) is kept" if saved is not None
            else "nothing was saved (no checkpoint yet)")
    return TrainingDiverged(f"training diverged at step {step}: {what}; {kept}; "
                            f"try a smaller train.lr (now {lr:g})")


def _finite_step(result: Any) -> bool:
    # an fp16 overflow step is skipped by the scaler and changed nothing: not a divergence
    grad_ok = result.grad_norm is None or math.isfinite(result.grad_norm)
    return math.isfinite(result.loss) and grad_ok


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    resume_from: int | None = None,
    force: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a denoiser as `cfg` says, writing checkpoints and metrics.jsonl into run_dir.

    resume: continue from the newest checkpoint (from step 0 if the run has none yet);
    resume_from: from the checkpoint of that step (later ones are discarded); force: start
    over in a directory that holds a run or other files. notify(text) hears what happens to
    the run directory. Raises RunDirError / CheckpointError (nothing written) or
    TrainingDiverged (the last finite checkpoint kept).
    """
    run_dir = Path(run_dir)
    say = notify or (lambda text: None)
    accelerator = make_accelerator(cfg, run_dir)
    # every process checks the run directory before the main one writes into it, so that all of
    # them refuse, or find the run finished, alike (and none waits at a barrier for a failed one)
    plan = plan_run(cfg, run_dir, resume=resume, resume_from=resume_from, force=force)
    accelerator.wait_for_everyone()
    if plan.finished:  # nothing to train: leave the run's files as they are
        done = finished_result(run_dir, plan.start_step)
        return TrainResult(run_dir=run_dir, steps=plan.start_step, **done)
    use_compile = compile_wanted(cfg.train.compile, accelerator.device)
    if use_compile and accelerator.device.type == "cpu" and compiler_missing():
        raise InputError(f"train.compile: {compiler_missing()}; or set train.compile false")

    torch.manual_seed(cfg.train.seed)  # the model's initial weights
    train_x, _ = load_dataset(cfg.data)
    schedule = schedule_from_config(cfg.diffusion)
    t, start_step, losses = build_trainer(cfg, accelerator, train_x=train_x.to(accelerator.device),
                                          schedule=schedule, ckpt=plan.ckpt)

    # everything is checked: from here on the run directory changes
    for note in plan.notes:
        say(note)
    if accelerator.is_main_process:
        for note in prepare_run_dir(cfg, run_dir, plan):
            say(note)
        kill_point("config")
    accelerator.wait_for_everyone()

    t.model, t.optimizer = accelerator.prepare(t.model, t.optimizer)
    t.raw_model = accelerator.unwrap_model(t.model)
    from flatgen.train.tracking import Tracking

    writer = RunWriter(cfg, run_dir, t, start_step=start_step, losses=losses,
                       saved=start_step if plan.ckpt is not None else None, progress=progress,
                       tracking=Tracking(accelerator, cfg, run_dir),
                       sample_shape=tuple(train_x.shape[1:]))
    with inductor_cache(run_dir / CACHE_DIR) if use_compile else nullcontext():
        forward = compiled(t.model) if use_compile else None
        with writer:
            step = _train_steps(cfg, t, writer, start_step=start_step, forward=forward,
                                on_step=on_step)
    final_loss, seconds = writer.finish(step, facts=run_facts(accelerator, compiled=use_compile))
    return TrainResult(run_dir=run_dir, steps=step, final_loss=final_loss, seconds=seconds,
                       it_per_s=(step - start_step) / max(seconds, 1e-9))


def _train_steps(cfg: Config, t: Trainer, writer: RunWriter, *, start_step: int,
                 forward: nn.Module | None,
                 on_step: Callable[[int, float], None] | None) -> int:
    """The optimizer steps from start_step on (Algorithm: draw the step's batch and noise,
    one train_step, guard, LR schedule, averages); the step reached."""
    from flatgen.train.step import train_step  # the SAM-aware step (accumulation, DDP, AMP)

    accelerator = t.accelerator
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    loss_fn = _loss_fn(cfg, t, forward)
    step = start_step
    t.model.train()
    with _StopFlag() as stop:
        while step < cfg.train.steps:
            seed_dropout(step_seed(cfg.train.seed, step, stream=1 + rank), device)
            batches = micro_batches(cfg, t.train_x, t.schedule, step=step, rank=rank, world=world)
            result = train_step(
                t.model, t.optimizer, batches, loss_fn=loss_fn, accelerator=accelerator,
                grad_clip=cfg.train.grad_clip, sync_perturbation=t.method.sync_perturbation,
            )
            step += 1
            if not _finite_step(result):  # stop before a checkpoint could save NaN weights
                raise _diverged(step, result, cfg.train.lr, writer.saved)
            if not result.skipped:  # an fp16 overflow step changed nothing: nothing to average
                t.scheduler.step()
                t.method.after_step(t.raw_model, step)
            if on_step is not None:
                on_step(step, result.loss)
            writer.after_step(step, result, stop=stop.requested)
            if stop.requested:
                break
    return step


def _loss_fn(cfg: Config, t: Trainer,
             forward: nn.Module | None) -> Callable[[nn.Module, tuple], torch.Tensor]:
    """loss_fn(net, micro_batch) for train_step: the diffusion loss (with DDPM-IP), at the WRM
    inner maximizer if the method says so; `forward`, if given, is the compiled net."""
    wrm, schedule, ip_gamma = cfg.method.dro, t.schedule, t.method.ip_gamma

    def loss_fn(net: nn.Module, mb: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x0, steps, noise, ip_noise = mb
        if wrm is not None:  # WRM: move x0 to the inner maximizer (no sync needed: unwrapped)
            inner = diffusion_per_sample_loss(t.raw_model, schedule, t=steps, noise=noise)
            x0 = wrm_perturb(inner, x0, wrm.gamma, steps=wrm.steps, step_size=wrm.step_size)
        net = net if forward is None else forward  # (a compiled module refuses bool())
        return diffusion_loss(net, x0, schedule, t=steps, noise=noise, ip_gamma=ip_gamma,
                              ip_noise=ip_noise)

    return loss_fn


def run_facts(accelerator: Accelerator, *, compiled: bool) -> dict[str, Any]:
    """What ran, for train_summary.json: the effective precision, device, world size, whether
    the forward was compiled, and the versions of torch, diffusers and flatgen."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
            "world_size": accelerator.num_processes, "compiled": compiled,
            "versions": {"torch": torch.__version__, "diffusers": installed("diffusers"),
                         "flatgen": installed("flatgen")}}


