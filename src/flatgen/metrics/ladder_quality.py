"""The quality score of the robustness ladders, chosen by the data and the Inception weights:

- digits (1 x 8 x 8): digits-FID, the features of flatgen's digits classifier;
- RGB images with the FID Inception's weights named (a study's evaluations.inception_weights,
  `--inception-weights`): Inception FID against the reference, its floor on the train draw;
- other image data: pixel W2, marked "pixel W2: cannot rank" (pixel-space W2 does not rank
  image models, digits included: README, benchmarks/RESULTS.md; metric_note says so for any
  ladders on images scored with W2);
- vector data (toy 2-D): W2, the metric that ranks them.

Every score comes with its floor (quality.py): the floors depend only on the sample count, so
each is computed once per count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flatgen.metrics.quality import is_digits, is_rgb, quality_report

CANNOT_RANK = "pixel W2: cannot rank"
W2, DIGITS_FID, INCEPTION_FID = "w2", "digits_fid", "inception_fid"  # quality_report's keys


@dataclass(frozen=True)
class LadderQuality:
    """What the ladders score with: fn(samples) -> metrics with their floors ("<key>_floor"),
    the metric the ladders read from them, and what a reader must know about it (None, or
    CANNOT_RANK)."""

    fn: Callable[[torch.Tensor], dict[str, Any]]
    metric: str
    note: str | None = None


def ladder_quality(
    reference: torch.Tensor,
    floor_reference: torch.Tensor,
    *,
    inception_weights: str | Path | None = None,
    inception: Callable[[torch.Tensor], dict[str, float]] | None = None,
) -> LadderQuality:
    """The ladders' quality function and metric on data like `reference` (see the module
    docstring). floor_reference: a draw of real TRAIN data, at least as many rows as any
    sample set scored. inception: a scorer already built on `reference` (an
    InceptionReference, e.g. shared by the models of a study); else one is built from
    inception_weights for RGB data."""
    rgb = is_rgb(reference)
    if inception is None and inception_weights is not None and rgb:
        from flatgen.metrics.inception import InceptionReference

        inception = InceptionReference(inception_weights, reference, split="test")
    if not rgb:
        inception = None  # the FID Inception scores RGB images only (as evaluate does)
    floors: dict[int, dict[str, Any]] = {}

    def quality(samples: torch.Tensor) -> dict[str, Any]:
        n = len(samples)
        if n > len(floor_reference):
            raise ValueError(f"{n} samples but only {len(floor_reference)} floor_reference rows")
        # floor_reference is already a random draw, so its first rows are one too
        first = n not in floors
        report = quality_report(samples, reference, floor_reference[:n] if first else None)
        if inception is not None:
            report |= inception(samples)
            if first:
                report |= {f"{k}_floor": v for k, v in inception(floor_reference[:n]).items()}
        floors.setdefault(n, {k: v for k, v in report.items() if "_floor" in k})
        return report | floors[n]

    metric = (DIGITS_FID if is_digits(reference) else INCEPTION_FID if inception is not None
              else W2)
    return LadderQuality(quality, metric, metric_note(reference, metric))


def metric_note(reference: torch.Tensor, metric: str | None) -> str | None:
    """CANNOT_RANK where ladders on images (digits included) are scored with pixel W2 (the
    default on images without an Inception score, or a metric the user set); else None."""
    return CANNOT_RANK if metric == W2 and reference.ndim == 4 else None
