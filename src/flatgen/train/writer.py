"""What a training run leaves on disk, step by step: metrics.jsonl lines, trackers, the progress
bar, checkpoints and train_summary.json. The kill-point test hooks (train/killpoints.py) sit here,
at the writes they interrupt, so the training loop itself reads as the algorithm.

Only the main process writes; the collectives (the mean loss over processes, the barrier before
a checkpoint) involve every process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from flatgen.io import dumps_strict, write_json_atomic
from flatgen.progress import make_progress
from flatgen.train.checkpoint import commit_checkpoint
from flatgen.train.killpoints import kill_point, kill_requested
from flatgen.train.rundir import CKPT_ROOT

LOSS_WINDOW = 50  # the progress bar's loss and the summary's final loss: mean of the last 50 steps


def mean_over_processes(accelerator: Any, value: float, world: int) -> float:
    """The mean of a per-process number over all processes (each sees its shard of the batch)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="mean"))


class RunWriter:
    """The metrics log, trackers, progress bar and checkpoints of one training run.

    trainer: the objects a checkpoint holds (model, optimizer, scheduler, averages, accelerator).
    losses: the last losses restored from the checkpoint (the windowed means continue exactly).
    """

    def __init__(self, cfg: Any, run_dir: Path, trainer: Any, *, start_step: int,
                 losses: list[float], saved: int | None, progress: bool, tracking: Any,
                 sample_shape: tuple[int, ...]) -> None:
        self.cfg, self.run_dir, self.trainer = cfg, run_dir, trainer
        self.accelerator = trainer.accelerator
        self.main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.start_step, self.losses = start_step, losses
        self.saved = saved  # the step of the last checkpoint written (None: none yet)
        self.tracking, self.sample_shape = tracking, sample_shape
        # the last losses are part of the state, so a resumed run logs the same windowed means
        self.keep_losses = max(LOSS_WINDOW, cfg.train.log_every)
        self._bar = make_progress(progress and self.main,
                                  fields=f"loss (last {LOSS_WINDOW}) {{task.fields[loss]:.4f}}")
        self._bar_ctx = self._task = self._log = None
        self.t_start = time.perf_counter()

    def __enter__(self) -> RunWriter:
        self._bar_ctx = self._bar.__enter__()
        if self._bar_ctx is not None:
            self._task = self._bar_ctx.add_task("train", total=self.cfg.train.steps,
                                                completed=self.start_step, loss=float("nan"))
        if self.main:
            self._log = (self.run_dir / "metrics.jsonl").open("a")
        self.t_start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._log is not None:
            self._log.close()
        self._bar.__exit__(*exc)

    def after_step(self, step: int, result: Any, *, stop: bool = False) -> None:
        """Record optimizer step `step` (1-based): its loss; every log_every steps a metrics line;
        every ckpt_every steps (and at the last step, or when asked to `stop`) a checkpoint."""
        train = self.cfg.train
        self.losses.append(result.loss)
        if len(self.losses) > 2 * self.keep_losses:  # only the last keep_losses are ever read
            del self.losses[: -self.keep_losses]
        if step % train.log_every == 0 or step == train.steps:
            self._log_line(step, result)
        self.tracking.after_step(self.trainer.raw_model, schedule=self.trainer.schedule,
                                 step=step, sample_shape=self.sample_shape)
        if self._task is not None:
            window = self.losses[-LOSS_WINDOW:]
            self._bar_ctx.update(self._task, completed=step, loss=sum(window) / len(window))
        kill_point("step", step)
        if step % train.ckpt_every == 0 or step == train.steps or stop:
            self.checkpoint(step)

    def _log_line(self, step: int, result: Any) -> None:
        recent = self.losses[-self.cfg.train.log_every:]
        # a collective: every process takes part, the main one writes
        mean_loss = mean_over_processes(self.accelerator, sum(recent) / len(recent), self.world)
        if self._log is None:
            return
        record = {
            "step": step,
            "loss": mean_loss,
            "lr": self.trainer.scheduler.get_last_lr()[0],
            "grad_norm": result.grad_norm,
            "skipped": result.skipped,
            "it_per_s": (step - self.start_step) / (time.perf_counter() - self.t_start),
        }
        line = dumps_strict(record) + "\n"  # strict JSON: null for inf / nan
        if kill_requested("metrics-write", step):
            self._log.write(line[: len(line) // 2])
            self._log.flush()
            kill_point("metrics-write", step)
        self._log.write(line)
        self._log.flush()
        self.tracking.log(record)

    def checkpoint(self, step: int) -> None:
        """checkpoints/step-<step> and checkpoints/last: weights, averages, optimizer, LR
        schedule, RNG, scaler and the last losses, everything a bitwise resume needs."""
        self.accelerator.wait_for_everyone()
        self.saved = step
        if not self.main:
            return
        t = self.trainer
        weights = {"model": t.raw_model}
        weights.update({name: avg.module for name, avg in t.averages.items()})
        scaler = self.accelerator.scaler
        state = {
            "step": step,
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            # the averaged weights themselves are in <name>.safetensors
            "averages": {name: {k: v for k, v in avg.state_dict().items() if k != "module"}
                         for name, avg in t.averages.items()},
            "rng_cpu": torch.get_rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "recent_losses": self.losses[-self.keep_losses:],
        }
        commit_checkpoint(self.run_dir / CKPT_ROOT, weights, state,
                          keep=self.cfg.train.keep_checkpoints)

    def finish(self, step: int, *, facts: dict[str, Any]) -> tuple[float, float]:
        """End the trackers, write train_summary.json (with `facts`: what ran); (final loss,
        seconds)."""
        self.tracking.finish()
        seconds = time.perf_counter() - self.t_start
        window = self.losses[-LOSS_WINDOW:]
        final_loss = sum(window) / max(1, len(window))
        if step == self.cfg.train.steps:  # an interrupted process may be elsewhere: no collective
            final_loss = mean_over_processes(self.accelerator, final_loss, self.world)
        kill_point("summary", step)
        if self.main:
            it_per_s = (step - self.start_step) / max(seconds, 1e-9)
            write_json_atomic(self.run_dir / "train_summary.json", {
                "steps": step, "final_loss": final_loss,
                "seconds": round(seconds, 2), "it_per_s": round(it_per_s, 3),
                "method": self.cfg.method.name, "processes": self.world,
                "interrupted": step < self.cfg.train.steps, "loss_window": LOSS_WINDOW,
                **facts,
            })
        return final_loss, seconds
