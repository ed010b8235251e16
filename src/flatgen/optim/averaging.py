"""Weight averages of a model: EMA and SWA. `.module` is a plain model to save or evaluate."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class _Average:
    """A frozen copy of a model in eval mode whose weights are some average of the model's."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        self.module = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)

    def _pairs(
        self, model: nn.Module
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
        """(average, model) pairs of parameters and of buffers."""
        model = unwrap_model(model)
        params = list(zip(self.module.parameters(), model.parameters(), strict=True))
        buffers = list(zip(self.module.buffers(), model.buffers(), strict=True))
        return params, buffers

    @torch.no_grad()
    def _copy_buffers(self, buffers: list[tuple[Tensor, Tensor]]) -> None:
        for a, b in buffers:
            a.copy_(b)


class EMA(_Average):
    """Exponential moving average of a model's parameters (buffers are copied, not averaged).

    update n (n = 0, 1, ...) uses decay_n = min(decay, (1 + n) / (10 + n)) with `warmup=True`
    (the TensorFlow ExponentialMovingAverage num_updates rule), else `decay`:
    ema = decay_n * ema + (1 - decay_n) * w.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        *,
        warmup: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        super().__init__(model, device)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (once per optimizer step)."""
        weight = 1.0 - self.current_decay()
        params, buffers = self._pairs(model)
        for a, p in params:
            if a.is_floating_point():
                a.lerp_(p.detach().to(a.device, a.dtype), weight)
            else:
                a.copy_(p)
        self._copy_buffers(buffers)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.module.load_state_dict(state_dict["module"])
        self.decay = float(state_dict["decay"])
        self.warmup = bool(state_dict["warmup"])
        self.num_updates = int(state_dict["num_updates"])


class SWA(_Average):
    """Equal-weight running average of the weights at steps start, start + every, ...

    Buffers are copied from the model at each averaged step (re-estimate BatchNorm statistics
    before evaluating a BatchNorm model). Until the first averaged step `.module` is the initial
    copy and `n_averaged` is 0.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        start: int = 0,
        every: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        if start < 0 or every < 1:
            raise ValueError(f"need start >= 0 and every >= 1, got start={start}, every={every}")
        super().__init__(model, device)
        self.start = start
        self.every = every
        self.n_averaged = 0

    def should_update(self, step: int) -> bool:
        """Whether `update(model, step)` averages at this step."""
        return step >= self.start and (step - self.start) % self.every == 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Average the model's weights in if `step` is due; returns whether it did."""
        if not self.should_update(step):
            return False
        params, buffers = self._pairs(model)
        self.n_averaged += 1
        for a, p in params:
            p = p.detach().to(a.device, a.dtype)
            if self.n_averaged == 1 or not a.is_floating_point():
                a.copy_(p)
            else:
                a.add_(p - a, alpha=1.0 / self.n_averaged)
        self._copy_buffers(buffers)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "start": self.start,
            "every": self.every,
            "n_averaged": self.n_averaged,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.module.load_state_dict(state_dict["module"])
        self.start = int(state_dict["start"])
        self.every = int(state_dict["every"])
        self.n_averaged = int(state_dict["n_averaged"])
