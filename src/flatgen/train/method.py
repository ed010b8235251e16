"""The Method hook: how a config's `method:` section turns into an optimizer and weight averages.

The training loop only calls `build_optimizer`, `averages` and `after_step`; SAM, its cheap
variants, EMA and SWA plug in here without touching the loop. Input perturbation lives in the
loss (`ip_gamma`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from flatgen.config import MethodConfig, TrainConfig


class Method:
    """Optimizer factory plus weight averaging for one training run."""

    def __init__(self, cfg: MethodConfig, train: TrainConfig):
        self.cfg = cfg
        self.train = train
        self.averages: dict[str, nn.Module] = {}  # name -> EMA / SWA averager

    @property
    def ip_gamma(self) -> float:
        return self.cfg.ip_gamma

    @property
    def sync_perturbation(self) -> bool:
        return bool(self.cfg.sam and self.cfg.sam.sync_perturbation)

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        base_kwargs = dict(lr=self.train.lr, weight_decay=self.train.weight_decay)
        sam = self.cfg.sam
        if sam is None:
            return torch.optim.AdamW(params, **base_kwargs)
        from flatgen.optim import sam_adamw

        return sam_adamw(
            params, sam.variant, rho=sam.rho, adaptive=sam.adaptive, eta=sam.eta,
            options={"k": sam.k, "alpha": sam.alpha}, **base_kwargs,
        )  # fmt: skip

    def attach_averages(self, model: nn.Module) -> dict[str, nn.Module]:
        """Create the EMA / SWA averagers of `model` that this method asks for."""
        if self.cfg.ema is None and self.cfg.swa is None:
            return self.averages
        from flatgen.optim import EMA, SWA

        if self.cfg.ema is not None:
            self.averages["ema"] = EMA(model, decay=self.cfg.ema.decay, warmup=self.cfg.ema.warmup)
        if self.cfg.swa is not None:
            start = self.cfg.swa.start
            start_step = int(start * self.train.steps) if start < 1 else int(start)
            self.averages["swa"] = SWA(model, start=start_step, every=self.cfg.swa.every)
        return self.averages

    def after_step(self, model: nn.Module, step: int) -> None:
        """Update the averages after optimizer step number `step` (1-based)."""
        if "ema" in self.averages:
            self.averages["ema"].update(model)
        if "swa" in self.averages:
            self.averages["swa"].update(model, step)
