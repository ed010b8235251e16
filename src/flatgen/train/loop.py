"""The Accelerate-based training loop for diffusion models.

Determinism: everything random in step s (batch indices, timesteps, noise, dropout) is drawn
from generators seeded by (seed, s), so a run resumed from a checkpoint replays exactly the
steps an uninterrupted run would take, and ends with bitwise-equal weights.
"""

from __future__ import annotations

import json
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

from flatgen.config import Config, config_changes, dump_config, load_config
from flatgen.data import load_dataset
from flatgen.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    draw_training_noise,
    schedule_from_config,
)
from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.models import model_from_config
from flatgen.optim.wrm import diffusion_per_sample_loss, wrm_perturb
from flatgen.progress import make_progress
from flatgen.train.checkpoint import (
    find_checkpoint,
    load_trainer_state,
    load_weights,
    save_checkpoint,
)
from flatgen.train.method import Method

CKPT_DIR = "checkpoints/last"


class RunDirError(ValueError):
    """The run directory cannot be used as asked (exists without --resume, or nothing to resume)."""


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
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""
    warmup, total, kind = cfg.train.warmup_steps, cfg.train.steps, cfg.train.lr_decay

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_accelerator(cfg: Config, project_dir: Path | None = None) -> Accelerator:
    # Accelerate only sets up multi-process CPU training (gloo) when told cpu=True.
    # mixed_precision None leaves it to `accelerate launch` / `accelerate config` (their
    # ACCELERATE_MIXED_PRECISION), and ACCELERATE_USE_CPU to them too; the config overrides.
    from flatgen.train.tracking import tracker_for

    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return Accelerator(cpu=cfg.train.cpu or no_gpu, mixed_precision=cfg.train.mixed_precision,
                       log_with=tracker_for(cfg.train.log_with),
                       project_dir=str(project_dir / "logs") if project_dir else None)


def micro_batches(cfg: Config, train_x: torch.Tensor, schedule: NoiseSchedule, step: int,
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


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


def _mean_over_processes(accelerator, value: float, world: int) -> float:
    """The mean of a per-process number over all processes (each sees its shard of the batch)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="mean"))


# what a resumed run really applies; anything else (the optimizer's lr, the method, the model,
# the data...) is fixed by the checkpoint, or would make the run a different one
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.ckpt_every", "eval")


def _short_repr(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_resume_config(cfg: Config, run_dir: Path) -> None:
    """Refuse a config for a resumed run that differs from the run's own in what resuming cannot apply."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    changes = config_changes(load_config(saved).model_dump(mode="json"), cfg.model_dump(mode="json"))
    refused = [(key, a, b) for key, a, b in changes
               if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)]
    if refused:
        shown = ", ".join(f"{key} ({_short_repr(a)} -> {_short_repr(b)})" for key, a, b in refused)
        raise RunDirError(f"cannot change {shown} when resuming: start a new run with --out")


def _check_run_dir(cfg: Config, run_dir: Path, resume: bool) -> None:
    """RunDirError unless run_dir can be used as asked; writes nothing, so every process can run it."""
    if resume:
        if find_checkpoint(run_dir / CKPT_DIR) is None:
            raise RunDirError(f"nothing to resume: {str(run_dir)!r} has no checkpoint")
        _check_resume_config(cfg, run_dir)
    elif (run_dir / "config.yaml").exists():
        raise RunDirError(
            f"run directory {str(run_dir)!r} already holds a run: pass --resume to continue it, "
            "or choose another --out"
        )


def _write_run_config(cfg: Config, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))


def _checkpoint_step(ckpt: Path) -> int:
    try:  # the small JSON sidecar spares loading the optimizer state
        return int(json.loads((ckpt / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return int(load_trainer_state(ckpt)["step"])


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finished_run(cfg: Config, run_dir: Path) -> TrainResult | None:
    """The result of a run whose checkpoint already reached cfg.train.steps, read back; else None."""
    ckpt = find_checkpoint(run_dir / CKPT_DIR)
    if ckpt is None:
        return None
    step = _checkpoint_step(ckpt)
    if step < cfg.train.steps:
        return None
    summary = _read_json(run_dir / "train_summary.json") or {}
    if summary.get("steps") == step:
        try:
            return TrainResult(run_dir=run_dir, steps=step, final_loss=float(summary["final_loss"]),
                               seconds=float(summary["seconds"]), it_per_s=float(summary["it_per_s"]))
        except (KeyError, TypeError, ValueError):
            pass
    # no usable summary (say a crash right after the last checkpoint): the last loss logged
    final_loss = float("nan")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
                if record["step"] <= step:
                    final_loss = float(record["loss"])
            except (ValueError, KeyError, TypeError):
                continue
    return TrainResult(run_dir=run_dir, steps=step, final_loss=final_loss, seconds=0.0, it_per_s=0.0)


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a denoiser as `cfg` says, writing checkpoints and metrics.jsonl into run_dir."""
    from flatgen.train.step import train_step  # the SAM-aware step (accumulation, DDP, AMP)

    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg, run_dir)
    # every process checks the run directory before the main one writes into it, so that all of
    # them refuse, or find the run finished, alike (and none waits at a barrier for a failed one)
    _check_run_dir(cfg, run_dir, resume)
    finished = _finished_run(cfg, run_dir) if resume else None
    accelerator.wait_for_everyone()
    if finished is not None:  # nothing to train: leave the run's files as they are
        return finished
    if accelerator.is_main_process:
        _write_run_config(cfg, run_dir)
    accelerator.wait_for_everyone()

    torch.manual_seed(cfg.train.seed)
    train_x, _ = load_dataset(cfg.data)
    train_x = train_x.to(accelerator.device)
    schedule = schedule_from_config(cfg.diffusion)
    model = model_from_config(cfg.model, tuple(train_x.shape[1:]))
    method = Method(cfg.method, cfg.train)
    optimizer = method.build_optimizer(model.parameters())
    base_optimizer = getattr(optimizer, "base_optimizer", optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(base_optimizer, lr_lambda(cfg))

    start_step = 0
    ckpt = find_checkpoint(run_dir / CKPT_DIR) if resume else None
    if ckpt is not None:
        model.load_state_dict(load_weights(ckpt, "model"))
    averages = method.attach_averages(model)
    if ckpt is not None:
        state = load_trainer_state(ckpt)
        start_step = int(state["step"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for name, avg in averages.items():
            avg.load_state_dict(state["averages"][name])
            avg.module.load_state_dict(load_weights(ckpt, name))
        torch.set_rng_state(state["rng_cpu"])

    model, optimizer = accelerator.prepare(model, optimizer)
    from flatgen.train.tracking import Tracking

    tracking = Tracking(accelerator, cfg, run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        _trim_metrics(metrics_path, start_step)

    wrm = cfg.method.dro

    def loss_fn(net: nn.Module, mb: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x0, t, noise, ip_noise = mb
        if wrm is not None:  # WRM: move x0 to the inner maximizer (no sync needed: unwrapped)
            unwrapped = accelerator.unwrap_model(net)
            inner = diffusion_per_sample_loss(unwrapped, schedule, t=t, noise=noise)
            x0 = wrm_perturb(inner, x0, wrm.gamma, steps=wrm.steps, step_size=wrm.step_size)
        return diffusion_loss(net, x0, schedule, t, noise, method.ip_gamma, ip_noise)

    def checkpoint(step: int) -> None:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return
        weights = {"model": accelerator.unwrap_model(model)}
        weights.update({name: avg.module for name, avg in averages.items()})
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "averages": {name: avg.state_dict() for name, avg in averages.items()},
            "rng_cpu": torch.get_rng_state(),
        }
        save_checkpoint(run_dir / CKPT_DIR, weights, state)

    rank, world = accelerator.process_index, accelerator.num_processes
    total = cfg.train.steps
    losses: list[float] = []
    t_start = time.perf_counter()
    step = start_step
    bar = make_progress(progress and accelerator.is_main_process, fields="loss {task.fields[loss]:.4f}")
    log = metrics_path.open("a") if accelerator.is_main_process else None
    try:
        with _StopFlag() as stop, bar as bar_ctx:
            task = bar_ctx.add_task("train", total=total, completed=start_step, loss=float("nan")) if bar_ctx else None
            model.train()
            while step < total:
                torch.manual_seed(step_seed(cfg.train.seed, step, stream=1 + rank))  # dropout
                batches = micro_batches(cfg, train_x, schedule, step, rank, world)
                result = train_step(
                    model, optimizer, batches, loss_fn, accelerator,
                    grad_clip=cfg.train.grad_clip, sync_perturbation=method.sync_perturbation,
                )
                step += 1
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
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        tracking.log(record)
                tracking.after_step(accelerator.unwrap_model(model), schedule=schedule, step=step,
                                    sample_shape=tuple(train_x.shape[1:]))
                if task is not None:
                    bar_ctx.update(task, completed=step, loss=sum(losses[-20:]) / len(losses[-20:]))
                if step % cfg.train.ckpt_every == 0 or step == total or stop.requested:
                    checkpoint(step)
                if stop.requested:
                    break
    finally:
        if log is not None:
            log.close()
    tracking.finish()
    seconds = time.perf_counter() - t_start
    final_loss = sum(losses[-50:]) / max(1, len(losses[-50:]))
    if step == total:  # an interrupted process may have stopped at another step: no collective then
        final_loss = _mean_over_processes(accelerator, final_loss, world)
    result = TrainResult(
        run_dir=run_dir,
        steps=step,
        final_loss=final_loss,
        seconds=seconds,
        it_per_s=(step - start_step) / max(seconds, 1e-9),
    )
    if accelerator.is_main_process:
        write_json_atomic(run_dir / "train_summary.json", {
            "steps": result.steps, "final_loss": result.final_loss,
            "seconds": round(seconds, 2), "it_per_s": round(result.it_per_s, 3),
            "method": cfg.method.name, "processes": world, "device": str(accelerator.device),
            "interrupted": step < total,
        })
    return result
