"""The Accelerate-based training loop for diffusion models.

Determinism: everything random in step s (batch indices, timesteps, noise, dropout) is drawn
from generators seeded by (seed, s), so a run resumed from a checkpoint replays exactly the
steps an uninterrupted run would take, and ends with bitwise-equal weights.

Failures: the run directory, the checkpoint to resume from and the data are all checked before
anything is written (flatgen.train.rundir); a non-finite loss or gradient stops training with
TrainingDiverged, keeping the last (finite) checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
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
from flatgen.errors import CheckpointError, TrainingDiverged
from flatgen.io import dumps_strict, write_json_atomic
from flatgen.models import model_from_config
from flatgen.optim.wrm import diffusion_per_sample_loss, wrm_perturb
from flatgen.progress import make_progress
from flatgen.train.checkpoint import (
    check_finite,
    commit_checkpoint,
    load_trainer_state,
    load_weights,
)
from flatgen.train.killpoints import kill_point, kill_requested
from flatgen.train.method import Method
from flatgen.train.rundir import (
    CKPT_ROOT,
    RunDirError,
    finished_result,
    plan_run,
    prepare_run_dir,
)
from flatgen.train.schedule import lr_lambda as schedule_lr_lambda
from flatgen.train.schedule import make_accelerator as shared_accelerator

CKPT_DIR = "checkpoints/last"
LOSS_WINDOW = 50  # the progress bar's loss and the summary's final loss: mean of the last 50 steps

__all__ = ["LOSS_WINDOW", "RunDirError", "TrainResult", "lr_lambda", "make_accelerator",
           "micro_batches", "step_seed", "train"]


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


def _mean_over_processes(accelerator, value: float, world: int) -> float:
    """The mean of a per-process number over all processes (each sees its shard of the batch)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="mean"))


def _restore(ckpt: Path, model: nn.Module, method: Method, optimizer, scheduler,
             accelerator: Accelerator) -> tuple[dict[str, Any], int, list[float]]:
    """Load a checkpoint into the model, averages, optimizer, scheduler and RNG;
    (averages, step, the last losses).

    Every file is read and checked (readable, fits the model, finite) before training writes.
    """
    weights = load_weights(ckpt, "model")
    check_finite(weights, ckpt / "model.safetensors")
    _load_into(model, weights, ckpt / "model.safetensors")
    averages = method.attach_averages(model)
    state = load_trainer_state(ckpt)
    average_weights = {name: load_weights(ckpt, name) for name in averages}
    for name, tensors in average_weights.items():
        check_finite(tensors, ckpt / f"{name}.safetensors")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, avg in averages.items():
            avg.load_state_dict({**state["averages"][name], "module": average_weights[name]})
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        reason = _first_line(err)[:80]
        raise CheckpointError(
            f"the trainer state in {str(ckpt)!r} does not fit this run ({reason}): "
            "resume from another checkpoint with --resume-from") from None
    return averages, int(state["step"]), list(state.get("recent_losses", []))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_into(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(
            f"{str(path)!r} does not fit the model of the run's config.yaml "
            "(another model.preset?): restore the run's own config.yaml") from None


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
    from flatgen.train.step import train_step  # the SAM-aware step (accumulation, DDP, AMP)

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

    torch.manual_seed(cfg.train.seed)
    train_x, _ = load_dataset(cfg.data)
    train_x = train_x.to(accelerator.device)
    schedule = schedule_from_config(cfg.diffusion)
    model = model_from_config(cfg.model, tuple(train_x.shape[1:]))
    method = Method(cfg.method, cfg.train)
    optimizer = method.build_optimizer(model.parameters())
    base_optimizer = getattr(optimizer, "base_optimizer", optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(base_optimizer, lr_lambda(cfg))

    start_step, losses = 0, []
    if plan.ckpt is not None:
        averages, start_step, losses = _restore(plan.ckpt, model, method, optimizer, scheduler,
                                                accelerator)
    else:
        averages = method.attach_averages(model)

    # everything is checked: from here on the run directory changes
    for note in plan.notes:
        say(note)
    if accelerator.is_main_process:
        for note in prepare_run_dir(cfg, run_dir, plan):
            say(note)
        kill_point("config")
    accelerator.wait_for_everyone()

    model, optimizer = accelerator.prepare(model, optimizer)
    from flatgen.train.tracking import Tracking

    tracking = Tracking(accelerator, cfg, run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    saved = start_step if plan.ckpt is not None else None  # the last checkpoint written

    wrm = cfg.method.dro

    def loss_fn(net: nn.Module, mb: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x0, t, noise, ip_noise = mb
        if wrm is not None:  # WRM: move x0 to the inner maximizer (no sync needed: unwrapped)
            unwrapped = accelerator.unwrap_model(net)
            inner = diffusion_per_sample_loss(unwrapped, schedule, t=t, noise=noise)
            x0 = wrm_perturb(inner, x0, wrm.gamma, steps=wrm.steps, step_size=wrm.step_size)
        return diffusion_loss(net, x0, schedule, t=t, noise=noise, ip_gamma=method.ip_gamma,
                              ip_noise=ip_noise)

    def checkpoint(step: int) -> None:
        nonlocal saved
        accelerator.wait_for_everyone()
        saved = step
        if not accelerator.is_main_process:
            return
        weights = {"model": accelerator.unwrap_model(model)}
        weights.update({name: avg.module for name, avg in averages.items()})
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            # the averaged weights themselves are in <name>.safetensors
            "averages": {name: {k: v for k, v in avg.state_dict().items() if k != "module"}
                         for name, avg in averages.items()},
            "rng_cpu": torch.get_rng_state(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "recent_losses": losses[-keep_losses:],
        }
        commit_checkpoint(run_dir / CKPT_ROOT, weights, state, keep=cfg.train.keep_checkpoints)

    rank, world = accelerator.process_index, accelerator.num_processes
    total = cfg.train.steps
    # the last losses are part of the state, so a resumed run logs the same windowed means
    keep_losses = max(LOSS_WINDOW, cfg.train.log_every)
    t_start = time.perf_counter()
    step = start_step
    bar = make_progress(progress and accelerator.is_main_process,
                        fields=f"loss (last {LOSS_WINDOW}) {{task.fields[loss]:.4f}}")
    log = metrics_path.open("a") if accelerator.is_main_process else None
    try:
        with _StopFlag() as stop, bar as bar_ctx:
            task = (bar_ctx.add_task("train", total=total, completed=start_step, loss=float("nan"))
                    if bar_ctx else None)
            model.train()
            while step < total:
                torch.manual_seed(step_seed(cfg.train.seed, step, stream=1 + rank))  # dropout
                batches = micro_batches(cfg, train_x, schedule, step=step, rank=rank, world=world)
                result = train_step(
                    model, optimizer, batches, loss_fn=loss_fn, accelerator=accelerator,
                    grad_clip=cfg.train.grad_clip, sync_perturbation=method.sync_perturbation,
                )
                step += 1
                if not _finite_step(result):  # stop before a checkpoint could save NaN weights
                    raise _diverged(step, result, cfg.train.lr, saved)
                if not result.skipped:  # an fp16 overflow step changed nothing: nothing to average
                    scheduler.step()
                    method.after_step(accelerator.unwrap_model(model), step)
                losses.append(result.loss)
                if on_step is not None:
                    on_step(step, result.loss)
                if step % cfg.train.log_every == 0 or step == total:
                    recent = losses[-cfg.train.log_every:]
                    # a collective: every process takes part, the main one writes
                    mean_loss = _mean_over_processes(accelerator, sum(recent) / len(recent), world)
                    if log is not None:
                        record = {
                            "step": step,
                            "loss": mean_loss,
                            "lr": scheduler.get_last_lr()[0],
                            "grad_norm": result.grad_norm,
                            "skipped": result.skipped,
                            "it_per_s": (step - start_step) / (time.perf_counter() - t_start),
                        }
                        line = dumps_strict(record) + "\n"  # strict JSON: null for inf / nan
                        if kill_requested("metrics-write", step):
                            log.write(line[: len(line) // 2])
                            log.flush()
                            kill_point("metrics-write", step)
                        log.write(line)
                        log.flush()
                        tracking.log(record)
                tracking.after_step(accelerator.unwrap_model(model), schedule=schedule, step=step,
                                    sample_shape=tuple(train_x.shape[1:]))
                if task is not None:
                    window = losses[-LOSS_WINDOW:]
                    bar_ctx.update(task, completed=step, loss=sum(window) / len(window))
                kill_point("step", step)
                if step % cfg.train.ckpt_every == 0 or step == total or stop.requested:
                    checkpoint(step)
                if stop.requested:
                    break
    finally:
        if log is not None:
            log.close()
    tracking.finish()
    seconds = time.perf_counter() - t_start
    window = losses[-LOSS_WINDOW:]
    final_loss = sum(window) / max(1, len(window))
    if step == total:  # an interrupted process may have stopped at another step: no collective then
        final_loss = _mean_over_processes(accelerator, final_loss, world)
    result = TrainResult(
        run_dir=run_dir,
        steps=step,
        final_loss=final_loss,
        seconds=seconds,
        it_per_s=(step - start_step) / max(seconds, 1e-9),
    )
    kill_point("summary", step)
    if accelerator.is_main_process:
        write_json_atomic(run_dir / "train_summary.json", {
            "steps": result.steps, "final_loss": result.final_loss,
            "seconds": round(seconds, 2), "it_per_s": round(result.it_per_s, 3),
            "method": cfg.method.name, "processes": world, "device": str(accelerator.device),
            "interrupted": step < total, "loss_window": LOSS_WINDOW,
        })
    return result
