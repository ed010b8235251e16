"""Post-training quantization: symmetric round-to-nearest weights, calibrated activations.

Weights of every Linear and Conv*/ConvTranspose* layer are fake-quantized (rounded to the
integer grid, stored back as floats) per tensor or per output channel, with zero point 0 and
the symmetric range [-(2^(b-1) - 1), 2^(b-1) - 1]. Biases and normalization parameters stay in
floating point, as in deployed integer kernels: biases are added in the wide accumulator and
norm layers are folded or run in float; both are a tiny share of the parameters.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, sample

QUANT_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
GRANULARITIES = ("tensor", "channel")
SCALE_BYTES = 4  # scales are stored as float32
_MIN_SCALE = 1e-12  # an all-zero tensor or channel still gets a positive scale


def _check(bits: int, granularity: str) -> None:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
        )


def channel_axis(module: nn.Module) -> int:
    """The output-channel axis of a layer's weight (1 for transposed convolutions)."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def symmetric_scale(w: torch.Tensor, bits: int, axis: int | None = None) -> torch.Tensor:
    """max|w| / (2^(b-1) - 1): a 0-d tensor (axis=None) or one scale per slice along axis."""
    qmax = 2 ** (bits - 1) - 1
    if axis is None:
        amax = w.detach().abs().amax()
    else:
        dims = [d for d in range(w.ndim) if d != axis]
        amax = w.detach().abs().amax(dim=dims)
    return (amax.float() / qmax).clamp_min(_MIN_SCALE)


def fake_quantize_symmetric(
    w: torch.Tensor, bits: int, *, granularity: str = "channel", axis: int = 0
) -> torch.Tensor:
    """w rounded to the symmetric b-bit grid (per tensor or per slice along axis), as floats."""
    _check(bits, granularity)
    qmax = 2 ** (bits - 1) - 1
    scale = symmetric_scale(w, bits, None if granularity == "tensor" else axis)
    if granularity == "channel":
        shape = [1] * w.ndim
        shape[axis] = -1
        scale = scale.view(shape)
    # multiply by the float32 reciprocal, as torch's fake-quantize kernels do (same ties)
    inv = 1.0 / scale
    q = torch.round(w.float() * inv).clamp(-qmax, qmax)
    return (q * scale).to(w.dtype)


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer whose weight quantize_weights rounds."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, QUANT_MODULES) and getattr(m, "weight", None) is not None
    ]


def quantize_weights(model: nn.Module, bits: int = 8, granularity: str = "channel") -> nn.Module:
    """A copy of model with Linear/Conv weights fake-quantized; the original is untouched."""
    _check(bits, granularity)
    qmodel = copy.deepcopy(model)
    with torch.no_grad():
        for _, module in quantized_layers(qmodel):
            module.weight.copy_(
                fake_quantize_symmetric(
                    module.weight, bits, granularity=granularity, axis=channel_axis(module)
                )
            )
    return qmodel


def model_size_bytes(
    model: nn.Module, bits: int | None = None, granularity: str = "channel"
) -> dict[str, Any]:
    """Parameter storage in bytes, float and (if bits is given) quantized.

    quantized bytes = ceil(bits * n_quantized / 8) + 4 * n_scales + bytes of unquantized params.
    Buffers are not counted.
    """
    if bits is not None:
        _check(bits, granularity)
    quantized = {id(m.weight): m for _, m in quantized_layers(model)}
    n_params = n_quantized = n_scales = float_bytes = other_bytes = 0
    for p in model.parameters():  # shared parameters are listed once
        size = p.numel() * p.element_size()
        n_params += p.numel()
        float_bytes += size
        if id(p) in quantized:
            n_quantized += p.numel()
            n_scales += 1 if granularity == "tensor" else p.shape[channel_axis(quantized[id(p)])]
        else:
            other_bytes += size
    out: dict[str, Any] = {
        "n_params": n_params,
        "n_quantized": n_quantized,
        "float_bytes": float_bytes,
        "bits": bits,
        "granularity": granularity if bits is not None else None,
        "n_scales": n_scales if bits is not None else 0,
        "bytes": float_bytes,
    }
    if bits is not None:
        out["bytes"] = math.ceil(bits * n_quantized / 8) + SCALE_BYTES * n_scales + other_bytes
    return out


# ---------------------------------------------------------------- activations


class ActivationFakeQuant:
    """Forward pre-hook: fake-quantizes a layer's input with a fixed asymmetric per-tensor grid."""

    def __init__(self, lo: float, hi: float, bits: int):
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # keep 0 exactly representable (zero padding)
        self.bits, self.qmin, self.qmax = bits, 0, 2**bits - 1
        self.scale = max((hi - lo) / self.qmax, _MIN_SCALE)
        self.zero_point = int(min(max(round(-lo / self.scale), self.qmin), self.qmax))
        self.lo, self.hi = lo, hi

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        xq = torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, self.qmin, self.qmax
        )
        return (xq, *args[1:])


class _RangeObserver:
    """Pre-hook recording the running range of a layer's input (min/max or percentiles)."""

    def __init__(self, method: str, percentile: float):
        self.method, self.percentile = method, percentile
        self.lo, self.hi = math.inf, -math.inf

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach().float().flatten()
        if self.method == "minmax":
            lo, hi = x.min().item(), x.max().item()
        else:
            if x.numel() > 2**24 - 1:  # torch.quantile's input limit: use an even subsample
                x = x[:: math.ceil(x.numel() / (2**24 - 1))]
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
            lo, hi = torch.quantile(x, q.to(x.device)).tolist()
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)


def calibration_inputs(
    model: nn.Module,
    schedule: NoiseSchedule,
    *,
    shape: tuple[int, ...],
    n: int = 64,
    steps: int = 20,
    sampler: str = "adm",
    generator: torch.Generator | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x_t, t) network inputs along a sampling run of the float model: one batch per timestep,
    so calibration sees every noise level the quantized model will meet."""
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(step: Any) -> None:
        t = torch.full((step.x_t.shape[0],), step.t, device=step.x_t.device, dtype=torch.long)
        inputs.append((step.x_t.clone(), t))

    was_training = model.training
    model.eval()
    try:
        sample(model, schedule, (n, *shape), steps=steps, sampler=sampler, generator=generator,
               on_step=record)
    finally:
        model.train(was_training)
    return inputs


def quantize_activations(
    model: nn.Module,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    bits: int = 8,
    method: str = "minmax",
    percentile: float = 99.99,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any] | None = None,
) -> nn.Module:
    """A copy of model whose Linear/Conv inputs are fake-quantized to `bits` (asymmetric, per
    tensor), with ranges calibrated on the (x_t, t) batches in `calibration` (min/max, or the
    given percentile and its mirror, widened over all batches). Combine with quantize_weights
    for W/A quantization. The hooks travel with copy.deepcopy.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    if method not in ("minmax", "percentile"):
        raise ValueError(f"method must be 'minmax' or 'percentile', got {method!r}")
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    qmodel = copy.deepcopy(model)
    layers = [m for _, m in quantized_layers(qmodel)]
    observers = [_RangeObserver(method, percentile) for _ in layers]
    handles = [m.register_forward_pre_hook(o) for m, o in zip(layers, observers, strict=True)]
    was_training = qmodel.training
    qmodel.eval()
    seen = False
    try:
        with torch.no_grad():
            for x, t in calibration:
                (forward or (lambda m, a, b: m(a, b)))(qmodel, x, t)
                seen = True
    finally:
        for h in handles:
            h.remove()
        qmodel.train(was_training)
    if not seen:
        raise ValueError("calibration gave no batches")
    for m, o in zip(layers, observers, strict=True):
        if math.isfinite(o.lo):  # layers the calibration never reached stay in float
            m.register_forward_pre_hook(ActivationFakeQuant(o.lo, o.hi, bits))
    return qmodel
