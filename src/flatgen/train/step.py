"""One optimizer step: gradient accumulation, DDP, mixed precision and the SAM family.

`train_step` runs the step protocol of `flatgen.optim.sam` (one or two forward/backward
passes) over k micro-batches. What it takes care of:

- accumulation: each micro-batch contributes loss/k, so k micro-batches give the same step as
  one batch k times larger;
- DDP: only the last backward of a pass all-reduces. The ascent pass of a SAM step runs entirely
  under `no_sync` (each replica perturbs with its own gradient) unless `sync_perturbation`;
- fp16 loss scaling (`accelerator.scaler`): the ascent gradient is unscaled by hand, the applied
  gradient once by the scaler; a step with inf/nan gradients is skipped on every replica
  (weights and optimizer state unchanged) and the scaler backs off;
- BatchNorm running statistics are updated in the first pass only;
- clipping (`accelerator.clip_grad_norm_`) acts on the gradient the base optimizer applies;
- the perturbation is undone if anything in the step raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import accelerate
import torch
from accelerate.utils import DistributedType
from torch import Tensor, nn

from flatgen.optim.sam import SAM, global_norm, running_stats_frozen

_SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float  # mean micro-batch loss of the first pass (at w; at w + e for MomentumSAM)
    skipped: bool  # fp16 overflow: no update, weights unchanged
    grad_norm: float | None  # 2-norm of the applied gradient before clipping; None if skipped


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer inside accelerate's AcceleratedOptimizer (and similar) wrappers."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Any],
    *,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    accelerator: accelerate.Accelerator,
    grad_clip: float | None = None,
    sync_perturbation: bool = False,
) -> StepResult:
    """One optimizer step over `micro_batches`; loss_fn(model, micro_batch) is the mean loss.

    `optimizer` is a torch optimizer or one of the SAM family, possibly from accelerator.prepare.
    Use Accelerator(gradient_accumulation_steps=1): the accumulation happens here.
    """
    if len(micro_batches) == 0:
        raise ValueError("train_step needs at least one micro-batch")
    if accelerator.gradient_accumulation_steps != 1:
        raise ValueError(
            "train_step accumulates micro-batches itself: use gradient_accumulation_steps=1"
        )
    opt = unwrap_optimizer(optimizer)
    sam = opt if isinstance(opt, SAM) else None
    if sam is not None and accelerator.distributed_type in _SHARDED:
        raise NotImplementedError("the SAM family runs on one device or under DDP, not sharded")
    scaler = accelerator.scaler
    if scaler is not None and not scaler.is_enabled():
        scaler = None
    if scaler is not None and _accelerate_unscales(accelerator) and opt is optimizer:
        raise ValueError(
            "with fp16 loss scaling, pass the optimizer returned by accelerator.prepare"
        )
    params = [p for group in opt.param_groups for p in group["params"]]
    opt.zero_grad(set_to_none=True)

    loss = None
    two_pass = sam is not None and sam.needs_second_pass()
    if two_pass:
        synced = sync_perturbation or sam.requires_synced_ascent
        loss = _forward_backward(model, micro_batches, loss_fn, accelerator, sync=synced)
        if scaler is not None and not _unscale_ascent(scaler, params, accelerator, synced):
            _skip(optimizer, opt, scaler, params)
            return StepResult(loss.item(), True, None)
    try:
        if sam is not None:
            sam.first_step(zero_grad=True)  # MomentumSAM perturbs here, before its only pass
        with running_stats_frozen(model) if two_pass else nullcontext():
            last = _forward_backward(model, micro_batches, loss_fn, accelerator, sync=True)
        loss = last if loss is None else loss
        # the gradients are all-reduced now, so every replica takes the same decision
        if scaler is not None and not _finite(params):
            _skip(optimizer, opt, scaler, params)
            return StepResult(loss.item(), True, None)
        if sam is not None:
            sam.finalize_grad()
        grad_norm = _unscale_and_clip(accelerator, optimizer, opt, scaler, params, grad_clip)
        if sam is not None:
            sam.base_step()
        else:
            opt.step()
    except BaseException:
        if sam is not None:
            sam.restore()
        raise
    if scaler is not None:
        scaler.update()
    _set_overflow(optimizer, False)
    return StepResult(loss.item(), False, float(grad_norm))


def _forward_backward(
    model: nn.Module,
    micro_batches: Sequence[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    accelerator: accelerate.Accelerator,
    sync: bool,
) -> Tensor:
    """Accumulate the gradient of the mean loss; only the last backward all-reduces, if `sync`."""
    k = len(micro_batches)
    total = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        ctx = nullcontext() if sync and i == k - 1 else accelerator.no_sync(model)
        with ctx:
            with accelerator.autocast():
                loss = loss_fn(model, batch)
            accelerator.backward(loss / k)
        total = total + loss.detach()  # float32 at least, float64 for a float64 loss
    return total / k


def _grads(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def _finite(params: Sequence[Tensor]) -> bool:
    # the max-norm cannot overflow on finite (scaled) gradients, but propagates inf and nan
    return bool(torch.isfinite(global_norm(_grads(params), float("inf"))))


def _accelerate_unscales(accelerator: accelerate.Accelerator) -> bool:
    """Whether accelerator.clip_grad_norm_ / unscale_gradients unscale (their own condition)."""
    return bool(accelerator.native_amp and accelerator.mixed_precision == "fp16")


def _unscale_ascent(
    scaler: torch.amp.GradScaler,
    params: Sequence[Tensor],
    accelerator: accelerate.Accelerator,
    synced: bool,
) -> bool:
    """Unscale the ascent gradient by hand; False if it overflowed on any replica.

    scaler.unscale_ is left for the applied gradient: it may run once per optimizer per update.
    """
    ok = _finite(params)
    if not synced and accelerator.num_processes > 1:  # replicas saw different gradients
        bad = torch.tensor(float(not ok), device=accelerator.device)
        ok = accelerator.reduce(bad, reduction="sum").item() == 0
    if ok:
        inv_scale = 1.0 / scaler.get_scale()
        for g in _grads(params):
            g.mul_(inv_scale)
    return ok


def _unscale_and_clip(
    accelerator: accelerate.Accelerator,
    optimizer: torch.optim.Optimizer,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    params: Sequence[Tensor],
    grad_clip: float | None,
) -> Tensor:
    """Unscale once, clip; the norm of the unclipped gradient."""
    native = _accelerate_unscales(accelerator)
    if scaler is not None and not native:
        scaler.unscale_(opt)
    if grad_clip is not None:
        return accelerator.clip_grad_norm_(params, grad_clip)  # unscales first when `native`
    if scaler is not None and native:
        accelerator.unscale_gradients(optimizer=optimizer)
    return global_norm(_grads(params))


def _skip(
    optimizer: torch.optim.Optimizer,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: Sequence[Tensor],
) -> None:
    """Drop this step: weights back to w, scaler backs off as after an overflow."""
    if isinstance(opt, SAM):
        opt.restore()
    # the step is dropped anyway: an inf makes unscale_ record the overflow on every replica
    # (also where only another replica's ascent gradient overflowed), so update() backs off alike
    grads = _grads(params)
    if grads:
        grads[0].fill_(float("inf"))
    else:
        params[0].grad = torch.full_like(params[0], float("inf"))
    scaler.unscale_(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    _set_overflow(optimizer, True)


def _set_overflow(optimizer: torch.optim.Optimizer, skipped: bool) -> None:
    # keeps accelerator.optimizer_step_was_skipped (read by prepared LR schedulers) truthful
    if hasattr(optimizer, "_is_overflow"):
        optimizer._is_overflow = skipped
