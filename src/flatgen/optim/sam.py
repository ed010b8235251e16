"""Sharpness-aware minimization: SAM / ASAM and cheaper variants sharing one step protocol.

One step, as `step(closure)` and `flatgen.train.step.train_step` run it::

    if opt.needs_second_pass():        # the perturbation needs the gradient at w
        <gradient at w>;  opt.first_step(zero_grad=True)
    else:
        opt.first_step(zero_grad=True)   # perturbs from optimizer state (MomentumSAM) or not at all
    <gradient at the perturbed point>;  opt.second_step()

`second_step()` is `finalize_grad()` (restore w, form the gradient to apply) followed by
`base_step()`; callers that unscale or clip gradients do so between the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_EPS = 1e-12
Rho = float | Callable[[int], float]


def global_norm(tensors: Sequence[Tensor], ord: float = 2.0) -> Tensor:
    """Norm of all `tensors` seen as one vector, on the first tensor's device.

    Computed in float32, or float64 if any tensor is float64.
    """
    if not tensors:
        return torch.zeros(())
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.device, t.dtype)].append(t)
    device = tensors[0].device
    norms = [
        n.to(device) for g in groups.values() for n in torch._foreach_norm(g, ord, dtype=dtype)
    ]
    return torch.linalg.vector_norm(torch.stack(norms), ord)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    device = a[0].device
    return torch.stack(
        [(x.float() * y.float()).sum().to(device) for x, y in zip(a, b, strict=True)]
    ).sum()


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm layers normalize with batch statistics but leave running stats alone."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False  # also stops num_batches_tracked; momentum=0 would not
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


class SAM(torch.optim.Optimizer):
    """SAM (Foret et al. 2021), or ASAM if `adaptive` (Kwon et al. 2021), around a base optimizer.

    first_step: e = rho * g / ||g|| (ASAM: rho * T^2 g / ||T g||, T = |w| elementwise), one norm
    over all parameters; second_step: back to w, base step with the gradient taken at w + e.
    `rho` is a float or a schedule `rho(step)` of the number of completed steps (see `set_rho`);
    `rho` and `adaptive` may differ between param groups. `base_optimizer` shares `param_groups`:
    attach LR schedulers to it.
    """

    requires_synced_ascent = False  # True where the ascent gradient outlives its step (LookSAM)
    _persistent: tuple[str, ...] = ()  # per-parameter state kept in state_dict

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        rho: Rho = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        self.rho_fn = rho if callable(rho) else None
        rho0 = float(rho(0) if callable(rho) else rho)
        if rho0 < 0:
            raise ValueError(f"rho must be >= 0, got {rho0}")
        super().__init__(params, dict(rho=rho0, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.num_steps = 0  # completed (not skipped) steps
        self._perturbed = False
        self._check_base_optimizer()

    # -- protocol -----------------------------------------------------------------------------

    def needs_second_pass(self) -> bool:
        """Whether this step needs the gradient at w before first_step (two forward/backward)."""
        return True

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w and move to w + e(w), e along `_direction` (SAM: the current gradient, at w)."""
        self._apply_rho_schedule()
        self._perturb(self._direction)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and step the base optimizer with the current gradient (taken at w + e)."""
        self.finalize_grad()
        self.base_step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def finalize_grad(self) -> None:
        """First half of second_step: restore w; p.grad becomes the gradient to apply."""
        self.restore()
        self._transform_grad()

    @torch.no_grad()
    def base_step(self) -> None:
        """Second half of second_step: the base optimizer's step."""
        self.base_optimizer.step()
        self.num_steps += 1

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by first_step (no-op when not perturbed)."""
        if not self._perturbed:
            return
        for p in self._params():
            w = self.state[p].pop("w", None) if p in self.state else None
            if w is not None:
                p.copy_(w)
        self._perturbed = False

    @property
    def perturbed(self) -> bool:
        """True between first_step and second_step/restore."""
        return self._perturbed

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """The whole step; closure() zeroes grads, runs forward and backward, returns the loss.

        Returns the loss of the first closure call (at w for a SAM step).
        """
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step needs a closure (two gradients per step); or call "
                "first_step()/second_step(), or use flatgen.train.step.train_step"
            )
        closure = torch.enable_grad()(closure)
        loss = None
        if self.needs_second_pass():
            loss = closure()
        self.first_step(zero_grad=True)
        try:
            second = closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return loss if loss is not None else second

    # -- rho ------------------------------------------------------------------------------------

    def set_rho(self, rho: float) -> None:
        """Set the radius of every param group (overridden by a rho schedule, if given)."""
        for group in self.param_groups:
            group["rho"] = float(rho)

    def _apply_rho_schedule(self) -> None:
        if self.rho_fn is not None:
            self.set_rho(self.rho_fn(self.num_steps))

    # -- internals ------------------------------------------------------------------------------

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # Hooks for the variants (besides needs_second_pass and _transform_grad), so that the
    # constructor and first_step (rho schedule, perturbation, zero_grad) are written once.

    def _check_base_optimizer(self) -> None:
        """Hook: raise if the base optimizer cannot serve this variant (any does for SAM)."""

    def _direction(self, p: Tensor) -> Tensor | None:
        """Hook: the ascent direction of p before normalization (None: p is not perturbed)."""
        return p.grad

    def _perturb(self, direction: Callable[[Tensor], Tensor | None]) -> None:
        """w += rho * d / ||d|| (ASAM: rho * T^2 d / ||T d||) with one norm over all parameters."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step/restore")
        entries = []
        for group in self.param_groups:
            for p in group["params"]:
                d = direction(p)
                if d is not None:
                    entries.append((group, p, p.abs() * d if group["adaptive"] else d))
        if not entries:
            return
        norm = global_norm([d for _, _, d in entries])
        for group, p, d in entries:
            e = d * (group["rho"] / (norm + _EPS)).to(p)
            if group["adaptive"]:
                e.mul_(p.abs())
            self.state[p]["w"] = p.detach().clone()
            p.add_(e)
        self._perturbed = True

    def _transform_grad(self) -> None:
        """Hook: turn p.grad into the gradient to apply (identity for SAM)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # called from Optimizer.__init__
            return super().add_param_group(param_group)
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        self.base_optimizer.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # torch keeps only defaults/state/param_groups

    def state_dict(self) -> dict[str, Any]:
        """Base optimizer state, step count and persistent per-parameter state (not the saved w)."""
        state = {}
        for i, p in enumerate(self._params()):
            kept = {k: v for k, v in self.state.get(p, {}).items() if k in self._persistent}
            if kept:
                state[i] = kept
        return {
            "base": self.base_optimizer.state_dict(),
            "num_steps": self.num_steps,
            "state": state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restore()
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict made new groups
        self.num_steps = int(state_dict["num_steps"])
        self.state = defaultdict(dict)
        for i, p in enumerate(self._params()):
            for k, v in state_dict["state"].get(i, {}).items():
                self.state[p][k] = v.to(device=p.device, dtype=p.dtype)


class SAMEveryK(SAM):
    """SAM every `k`-th step (steps 0, k, 2k, ...), plain base-optimizer steps in between."""

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        rho: Rho = 0.05,
        adaptive: bool = False,
        k: int = 2,
        **base_kwargs: Any,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(params, base_optimizer_cls, rho, adaptive, **base_kwargs)
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


class LookSAM(SAMEveryK):
    """LookSAM (Liu et al. 2022): full SAM every `k` steps, cheap steps reuse its direction.

    At a SAM step the part of the SAM gradient g_s orthogonal to the gradient g at w,
    g_v = g_s - (g.g_s / ||g||^2) g, is stored; a cheap step applies g + alpha * ||g|| g_v/||g_v||.
    Its ascent pass is always all-reduced under DDP (requires_synced_ascent): g_v is reused on
    later steps and must be the same on every replica.
    """

    requires_synced_ascent = True
    _persistent = ("g_v",)

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        rho: Rho = 0.05,
        adaptive: bool = False,
        k: int = 5,
        alpha: float = 0.7,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(params, base_optimizer_cls, rho, adaptive, k, **base_kwargs)
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


class MomentumSAM(SAM):
    """Momentum-SAM (Becker et al. 2024): one forward/backward pass per step.

    Before the pass, w -> w - rho * m/||m|| (ASAM scaling with adaptive=True) with m the base
    optimizer's momentum: `momentum_buffer` for SGD (momentum > 0), `exp_avg` for Adam/AdamW (the
    first moment without bias correction; the direction is the same). The gradient is taken
    there, then the base optimizer steps from w. No perturbation until a momentum exists.
    """

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


def sam_adamw(
    params: Iterable[Tensor] | Iterable[dict],
    variant: str,
    rho: float,
    adaptive: bool = False,
    k: int = 5,
    alpha: float = 0.7,
    **adamw_kwargs: Any,
) -> SAM:
    """AdamW wrapped in the named SAM variant: "sam", "looksam", "momentumsam" or "sam-every-k"
    (k: the LookSAM / SAM-every-k period; alpha: LookSAM's gradient-reuse weight)."""
    common = dict(rho=rho, adaptive=adaptive, **adamw_kwargs)
    if variant == "sam":
        return SAM(params, torch.optim.AdamW, **common)
    if variant == "looksam":
        return LookSAM(params, torch.optim.AdamW, k=k, alpha=alpha, **common)
    if variant == "momentumsam":
        return MomentumSAM(params, torch.optim.AdamW, **common)
    if variant == "sam-every-k":
        return SAMEveryK(params, torch.optim.AdamW, k=k, **common)
    raise ValueError(f"unknown SAM variant {variant!r}; use sam, looksam, momentumsam or sam-every-k")
