"""Hessian-vector products of a loss on fixed data, as a linear operator on flat vectors.

Two formulations are available; the default was picked by measurement
(benchmarks/hessian_speed.py, digits U-Net, 701k params, one CPU thread, busy machine):
"reverse", double backward through a gradient graph built once and kept, cost 0.72 s per
product at batch 128 (0.36 s at batch 32); "forward" (forward-over-reverse, torch.func.jvp
of torch.func.grad, which must redo the forward pass every time) was 1.85x slower (2.1x at
batch 32), and double backward rebuilding the graph per product 1.4-1.5x slower. Batching
products with torch.func.vmap over a vjp gained under 10% (and autograd's is_grads_batched
fails on the U-Net), so the solvers take one product at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

import torch
from torch import nn

from flatgen.analysis.params import (
    LossFn,
    ParamSpace,
    analysis_mode,
    composite_group_norm,
    functional_loss,
)

HVPMethod = Literal["reverse", "forward"]
HVP_METHODS: tuple[str, ...] = ("reverse", "forward")


class LinearOperator(Protocol):
    """A symmetric linear map on flat vectors of length n."""

    n: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...


class MatrixOperator:
    """A dense symmetric matrix as a LinearOperator (tests, small problems)."""

    def __init__(self, matrix: torch.Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.n = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_matvecs += 1
        return self.matrix @ v


class HessianOperator:
    """v -> H v for H the Hessian of loss_fn(model) w.r.t. the trainable parameters.

    The operator is a snapshot: it uses the parameter values at construction ("reverse" keeps
    the gradient graph built then). Dropout is off and BatchNorm uses running statistics while
    the loss is evaluated; the model's modes are restored afterwards. `params` restricts the
    operator to a subset of parameter names (the Hessian block of those parameters).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        params: Sequence[str] | None = None,
        *,
        method: HVPMethod = "reverse",
    ):
        if method not in HVP_METHODS:
            raise ValueError(f"unknown HVP method {method!r}; choose from {', '.join(HVP_METHODS)}")
        self.model = model
        self.loss_fn = loss_fn
        self.method = method
        self.full = ParamSpace(model)
        self._grads: list[torch.Tensor | None] | None = None
        self._counter = [0]  # shared with block views
        with analysis_mode(model):
            if method == "reverse":
                loss = loss_fn(model)
                self._grads = list(
                    torch.autograd.grad(
                        loss, self.full.params, create_graph=True, allow_unused=True
                    )
                )
            else:
                with torch.no_grad():
                    loss = loss_fn(model)
        self.loss = float(loss.detach())
        self._select(params)

    def _select(self, params: Sequence[str] | None) -> None:
        self.space = ParamSpace(self.model, params if params is not None else self.full.names)
        pos = {name: i for i, name in enumerate(self.full.names)}
        self._idx = [pos[name] for name in self.space.names]
        self.n = self.space.n
        self.dtype = self.space.dtype
        self.device = self.space.device

    @property
    def n_matvecs(self) -> int:
        """Hessian-vector products computed so far (by this operator and its blocks)."""
        return self._counter[0]

    def block(self, params: Sequence[str]) -> HessianOperator:
        """The operator for the diagonal Hessian block of `params`, sharing this one's graph."""
        view = object.__new__(HessianOperator)
        view.__dict__.update(self.__dict__)
        view._select(params)
        return view

    def gradient(self) -> torch.Tensor:
        """The gradient of the loss at the snapshot, as a flat vector of length n."""
        params = [self.full.params[i] for i in self._idx]
        if self._grads is not None:
            grads = [self._grads[i] for i in self._idx]
        else:  # "forward" keeps no graph: one more backward pass
            with analysis_mode(self.model):
                loss = self.loss_fn(self.model)
                grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        return torch.cat(
            [
                (g.detach() if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, params, strict=True)
            ]
        )

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v of length n."""
        if v.shape != (self.n,):
            raise ValueError(f"expected a vector of shape ({self.n},), got {tuple(v.shape)}")
        v = v.to(self.dtype)
        self._counter[0] += 1
        if self.method == "reverse":
            return self._hvp_reverse(v)
        return self._hvp_forward(v)

    def _hvp_reverse(self, v: torch.Tensor) -> torch.Tensor:
        assert self._grads is not None
        params = [self.full.params[i] for i in self._idx]
        outs, grad_outs = [], []
        for i, vi in zip(self._idx, self.space.split(v), strict=True):
            g = self._grads[i]
            if g is not None and g.requires_grad:  # a gradient constant in theta adds nothing
                outs.append(g)
                grad_outs.append(vi)
        if not outs:
            return torch.zeros_like(v)
        hv = torch.autograd.grad(
            outs, params, grad_outputs=grad_outs, retain_graph=True, allow_unused=True
        )
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                for h, p in zip(hv, params, strict=True)
            ]
        ).detach()

    def _hvp_forward(self, v: torch.Tensor) -> torch.Tensor:
        primals = {n: p.detach() for n, p in zip(self.space.names, self.space.params, strict=True)}
        tangents = self.space.to_dict(v)

        def grad_fn(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return torch.func.grad(lambda q: functional_loss(self.model, self.loss_fn, q))(p)

        with analysis_mode(self.model), composite_group_norm(self.model):
            _, hv = torch.func.jvp(grad_fn, (primals,), (tangents,))
        return torch.cat([hv[n].reshape(-1) for n in self.space.names]).detach()

    def close(self) -> None:
        """Free the kept gradient graph."""
        self._grads = None

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    method: HVPMethod = "reverse",
    operator: HessianOperator | None = None,
) -> Iterator[HessianOperator]:
    """`operator` if given (left open: its owner closes it), else a new HessianOperator of
    loss_fn(model), closed on exit. One operator (one gradient graph, built once) can so
    serve Lanczos, the trace, the density and the expansion check in turn."""
    if operator is None:
        with HessianOperator(model, loss_fn, method=method) as op:
            yield op
        return
    check_operator(operator, model, loss_fn)
    yield operator


def check_operator(operator: HessianOperator, model: nn.Module, loss_fn: LossFn) -> None:
    """A shared operator must be the full Hessian of this very model and loss."""
    if operator.model is not model or operator.loss_fn is not loss_fn:
        raise ValueError("the Hessian operator was built for another model or loss function")
    if operator._grads is None and operator.method == "reverse":
        raise ValueError("the Hessian operator is closed (its gradient graph was freed)")
    if operator.space.names != operator.full.names:
        raise ValueError("a block of the Hessian cannot stand for the full Hessian")
