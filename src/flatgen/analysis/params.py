"""Flat views of a model's trainable parameters, and the evaluation context all analyses share."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

LossFn = Callable[[nn.Module], torch.Tensor]
# progress(done, total): called after each unit of work of a long loop; total may be an upper bound
ProgressFn = Callable[[int, int], None]


class ParamSpace:
    """The trainable parameters of a model as one flat vector (names, shapes, offsets)."""

    def __init__(self, model: nn.Module, names: Sequence[str] | None = None):
        named = dict(model.named_parameters())
        if names is None:
            names = [n for n, p in named.items() if p.requires_grad]
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(f"unknown parameter names: {', '.join(missing[:5])}")
        if not names:
            raise ValueError("the model has no trainable parameters")
        self.names: list[str] = list(names)
        self.params: list[nn.Parameter] = [named[n] for n in self.names]
        self.shapes: list[torch.Size] = [p.shape for p in self.params]
        self.numels: list[int] = [p.numel() for p in self.params]
        self.n: int = sum(self.numels)
        self.dtype: torch.dtype = self.params[0].dtype
        self.device: torch.device = self.params[0].device

    def flat(self) -> torch.Tensor:
        """A detached copy of the current parameter values as one flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors (in this space's order) into one flat vector."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector (n,) or a batch of them (b, n)."""
        lead = flat.shape[:-1]
        return [
            chunk.view(*lead, *shape)
            for chunk, shape in zip(flat.split(self.numels, dim=-1), self.shapes, strict=True)
        ]

    def to_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: tensor} for a flat vector or a batch of flat vectors."""
        return dict(zip(self.names, self.split(flat), strict=True))

    def segments(self) -> list[tuple[str, slice]]:
        """(name, slice into the flat vector) for every parameter."""
        out, start = [], 0
        for name, k in zip(self.names, self.numels, strict=True):
            out.append((name, slice(start, start + k)))
            start += k
        return out


class LossModule(nn.Module):
    """Wraps (model, loss_fn) as a module whose forward() is the loss, for torch.func calls.

    Parameter names are the model's, prefixed with "model.".
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self) -> torch.Tensor:
        return self.loss_fn(self.model)


def functional_loss(
    model: nn.Module, loss_fn: LossFn, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """loss_fn(model) with some parameters replaced by `params` ({model name: tensor}).

    The model itself is not modified.
    """
    wrapper = LossModule(model, loss_fn)
    return torch.func.functional_call(wrapper, {f"model.{k}": v for k, v in params.items()}, ())


@contextlib.contextmanager
def analysis_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off, BatchNorm on running statistics, attention on twice-differentiable kernels.

    Every module's training flag is restored on exit. The math SDPA backend is forced because
    the fused CPU/GPU attention kernels have no double backward.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for m, flag in flags:
            m.training = flag


def report(progress: ProgressFn | None, done: int, total: int) -> None:
    """Call the progress callback if there is one."""
    if progress is not None:
        progress(done, total)


def _group_norm_forward(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[:2]
    xg = x.reshape(n, self.num_groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = xg.var(-1, unbiased=False, keepdim=True)
    y = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
    if self.affine:
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
    return y


@contextlib.contextmanager
def composite_group_norm(model: nn.Module) -> Iterator[None]:
    """GroupNorm layers computed from elementary ops while inside the context.

    torch's fused group_norm cannot run under torch.func.vmap on CPU ("NYI: querying
    is_contiguous inside of vmap") and its forward-mode derivative fails on non-contiguous
    tangents; the composite form does both. Results agree to float rounding.
    """
    mods = [m for m in model.modules() if isinstance(m, nn.GroupNorm) and "forward" not in vars(m)]
    for m in mods:
        m.forward = types.MethodType(_group_norm_forward, m)
    try:
        yield
    finally:
        for m in mods:
            del m.forward
