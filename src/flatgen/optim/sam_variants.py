"""The cheaper SAM variants: SAM every k steps, LookSAM and Momentum-SAM.

Each is one registered class (flatgen.optim.registry) on SAM's step protocol and hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from flatgen.optim.registry import register_sam_variant
from flatgen.optim.sam import _EPS, SAM, _dot, global_norm


@register_sam_variant
class SAMEveryK(SAM):
    """SAM every `k`-th step (steps 0, k, 2k, ...), plain base-optimizer steps in between."""

    name = "sam-every-k"
    options = ("k",)

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        *,
        k: int = 2,
        **kwargs: Any,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(params, base_optimizer_cls, **kwargs)
        self.k = k

    def needs_second_pass(self) -> bool:
        return self.num_steps % self.k == 0

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """SAM's first_step on SAM steps; otherwise no perturbation."""
        if self.needs_second_pass():
            super().first_step(zero_grad)
        elif zero_grad:
            self.zero_grad()


@register_sam_variant
class LookSAM(SAMEveryK):
    """LookSAM (Liu et al. 2022): full SAM every `k` steps, cheap steps reuse its direction.

    At a SAM step the part of the SAM gradient g_s orthogonal to the gradient g at w,
    g_v = g_s - (g.g_s / ||g||^2) g, is stored; a cheap step applies g + alpha * ||g|| g_v/||g_v||.
    Its ascent pass is always all-reduced under DDP (requires_synced_ascent): g_v is reused on
    later steps and must be the same on every replica.
    """

    name = "looksam"
    options = ("k", "alpha")
    requires_synced_ascent = True
    _persistent = ("g_v",)

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        *,
        k: int = 5,
        alpha: float = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer_cls, k=k, **kwargs)
        self.alpha = alpha

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        if self.needs_second_pass():
            for p in self._params():
                if p.grad is not None:
                    self.state[p]["g"] = p.grad.detach().clone()
        super().first_step(zero_grad)

    def _transform_grad(self) -> None:
        params = [p for p in self._params() if p.grad is not None]
        if any("g" in self.state.get(p, {}) for p in params):
            self._store_orthogonal(params)
        elif params:
            self._add_orthogonal(params)

    def _store_orthogonal(self, params: list[Tensor]) -> None:
        """SAM step: keep g_v / ||g_v|| with g_v = g_s - (g.g_s / ||g||^2) g."""
        g = [self.state[p].pop("g", torch.zeros_like(p)) for p in params]
        g_s = [p.grad for p in params]
        coef = _dot(g, g_s) / (global_norm(g) ** 2 + _EPS)
        g_v = [gs - coef.to(gs) * gw for gs, gw in zip(g_s, g, strict=True)]
        inv = 1.0 / (global_norm(g_v) + _EPS)
        for p, v in zip(params, g_v, strict=True):
            self.state[p]["g_v"] = v.mul_(inv.to(v))

    def _add_orthogonal(self, params: list[Tensor]) -> None:
        """Cheap step: g + alpha * ||g|| * g_v / ||g_v||."""
        scale = self.alpha * global_norm([p.grad for p in params])
        for p in params:
            g_v = self.state.get(p, {}).get("g_v")
            if g_v is not None:
                p.grad.add_(g_v * scale.to(g_v))


@register_sam_variant
class MomentumSAM(SAM):
    """Momentum-SAM (Becker et al. 2024): one forward/backward pass per step.

    Before the pass, w -> w - rho * m/||m|| (ASAM scaling with adaptive=True) with m the base
    optimizer's momentum: `momentum_buffer` for SGD (momentum > 0), `exp_avg` for Adam/AdamW (the
    first moment without bias correction; the direction is the same). The gradient is taken
    there, then the base optimizer steps from w. No perturbation until a momentum exists.
    """

    name = "momentumsam"
    _momentum_keys = ("exp_avg", "momentum_buffer")

    def needs_second_pass(self) -> bool:
        return False

    # first_step is SAM's: it moves to w - rho * m/||m|| (gradients are not used)

    def _check_base_optimizer(self) -> None:
        d = self.base_optimizer.defaults
        if "betas" not in d and not d.get("momentum"):
            raise ValueError(
                "MomentumSAM needs a base optimizer with momentum (SGD momentum>0, Adam)"
            )

    def _direction(self, p: Tensor) -> Tensor | None:
        """The negative momentum of p (None before the base optimizer has one)."""
        state = self.base_optimizer.state.get(p, {})
        for key in self._momentum_keys:
            if key in state:
                return -state[key]
        return None
