"""Sharpness-aware minimization: SAM / ASAM, the base of the variants sharing one step protocol.

One step, as `step(closure)` and `flatgen.train.step.train_step` run it::

    if opt.needs_second_pass():        # the perturbation needs the gradient at w
        <gradient at w>;  opt.first_step(zero_grad=True)
    else:
        opt.first_step(zero_grad=True)   # perturbs from optimizer state (MomentumSAM) or not at all
    <gradient at the perturbed point>;  opt.second_step()

`second_step()` is `finalize_grad()` (restore w, form the gradient to apply) followed by
`base_step()`; callers that unscale or clip gradients do so between the two. The cheaper
variants are in flatgen.optim.sam_variants; all are found by name in flatgen.optim.registry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from flatgen.optim.registry import register_sam_variant

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


@register_sam_variant
class SAM(torch.optim.Optimizer):
    """SAM (Foret et al. 2021), or ASAM if `adaptive` (Kwon et al. 2021), around a base optimizer.

    first_step: e = rho * g / ||g|| (ASAM: rho * T^2 g / ||T g|| with Kwon et al.'s
    T = |w| + eta elementwise), one norm over all parameters; second_step: back to w, base step
    with the gradient taken at w + e. `rho` is a float or a schedule `rho(step)` of the number
    of completed steps (see `set_rho`); `rho`, `adaptive` and `eta` may differ between param
    groups. `base_optimizer` shares `param_groups`: attach LR schedulers to it.

    A variant subclasses SAM, sets `name` and `options` (its own constructor arguments) and is
    registered with @register_sam_variant (flatgen.optim.registry).
    """

    name = "sam"
    options: tuple[str, ...] = ()  # the variant's own keyword arguments (sam_adamw's options)

    requires_synced_ascent = False  # True where the ascent gradient outlives its step (LookSAM)
    _persistent: tuple[str, ...] = ()  # per-parameter state kept in state_dict

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        *,
        rho: Rho = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        **base_kwargs: Any,
    ) -> None:
        self.rho_fn = rho if callable(rho) else None
        rho0 = float(rho(0) if callable(rho) else rho)
        if rho0 < 0:
            raise ValueError(f"rho must be >= 0, got {rho0}")
        if eta < 0:
            raise ValueError(f"eta (the ASAM offset) must be >= 0, got {eta}")
        defaults = dict(rho=rho0, adaptive=adaptive, eta=float(eta), **base_kwargs)
        super().__init__(params, defaults)
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
        """w += rho * d / ||d|| (ASAM: rho * T^2 d / ||T d||, T = |w| + eta) with one norm over
        all parameters."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step/restore")
        entries = []
        for group in self.param_groups:
            for p in group["params"]:
                d = direction(p)
                if d is not None:
                    t = p.abs() + group["eta"] if group["adaptive"] else None
                    entries.append((group, p, t, d if t is None else t * d))
        if not entries:
            return
        norm = global_norm([d for _, _, _, d in entries])
        for group, p, t, d in entries:
            e = d * (group["rho"] / (norm + _EPS)).to(p)
            if t is not None:
                e.mul_(t)
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
        param_group.setdefault("eta", self.defaults["eta"])
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
