"""Sample quality under filter-normalized Gaussian weight noise.

For every weight with 2 or more dimensions, a Gaussian direction d is drawn and each filter
(slice along dim 0: an output filter of a conv, a row of a linear layer) is rescaled to the
norm of the same filter of the weight, as in Li et al.'s filter normalization; the model is
then evaluated at w + sigma * d. sigma is thus the relative size of the perturbation of every
filter. Biases and normalization parameters (1-D) are not perturbed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from flatgen.robustness.util import make_generator
from flatgen.robustness.attacks import robust_epsilon


def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """name -> a Gaussian direction whose every filter has the norm of the weight's filter."""
    out = {}
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        d = torch.randn(tuple(p.shape), generator=generator, dtype=torch.float32).to(p.device)
        w = p.detach().float().flatten(1).norm(dim=1)
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-30)
        out[name] = (d * (w / dn).view(-1, *([1] * (p.ndim - 1)))).to(p.dtype)
    return out


def perturb_weights(
    model: nn.Module, sigma: float, direction: dict[str, torch.Tensor]
) -> nn.Module:
    """A copy of model with weights w + sigma * direction[name]; the original is untouched."""
    noisy = copy.deepcopy(model)
    params = dict(noisy.named_parameters())
    with torch.no_grad():
        for name, d in direction.items():
            params[name].add_(d, alpha=sigma)
    return noisy


def metric_value(quality: dict[str, Any], metric: str) -> float:
    """One metric from a quality dict, with a clear error when it is missing."""
    if metric not in quality:
        raise KeyError(f"metric {metric!r} not in quality results (have {', '.join(quality)})")
    return float(quality[metric])


def weight_noise_sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, Any]],
    sigmas: Sequence[float] = (0.01, 0.02, 0.05, 0.1),
    draws: int = 2,
    seed: int = 0,
    metric: str = "w2",
    fraction: float = 0.5,
    baseline: dict[str, Any] | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """evaluate(noisy copy) for each sigma and draw (draw k uses the same direction at every
    sigma). sigma 0 is the unperturbed model (pass its quality as baseline to skip a run).
    robust_sigma: where the mean metric has risen by `fraction` (lower-is-better metrics)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    sig = sorted({0.0, *map(float, sigmas)})
    base = baseline if baseline is not None else evaluate(model)
    directions = [
        filter_normalized_direction(model, make_generator(seed, "weight-noise", k))
        for k in range(draws)
    ]
    quality: list[list[dict[str, Any]]] = []
    for s in sig:
        if s == 0:
            quality.append([base])
            continue
        row = []
        for d in directions:
            row.append(evaluate(perturb_weights(model, s, d)))
            if tick:
                tick()
        quality.append(row)
    values = [[metric_value(q, metric) for q in row] for row in quality]
    mean = [sum(v) / len(v) for v in values]
    std = [
        (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
        for v, m in zip(values, mean, strict=True)
    ]
    return {
        "sigma": sig,
        "draws": draws,
        "metric": metric,
        "quality": quality,
        "metric_values": values,
        "metric_mean": mean,
        "metric_std": std,
        "robust_sigma": robust_epsilon(sig, mean, fraction),
        "fraction": fraction,
    }
