"""Optimizers toward flat minima (SAM family) and weight averaging (EMA, SWA)."""

from flatgen.optim.averaging import EMA, SWA, unwrap_model
from flatgen.optim.sam import (
    SAM,
    LookSAM,
    MomentumSAM,
    SAMEveryK,
    global_norm,
    running_stats_frozen,
    sam_adamw,
)

__all__ = [
    "EMA",
    "SAM",
    "SWA",
    "LookSAM",
    "MomentumSAM",
    "SAMEveryK",
    "global_norm",
    "running_stats_frozen",
    "sam_adamw",
    "unwrap_model",
]
