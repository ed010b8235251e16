"""Optimizers toward flat minima (SAM family) and weight averaging (EMA, SWA).

The SAM variants register themselves by name when their modules are imported here; look them
up with sam_variant / sam_variant_names, or build one around AdamW with sam_adamw.
"""

from flatgen.optim.averaging import EMA, SWA, unwrap_model
from flatgen.optim.registry import (
    SAM_VARIANTS,
    register_sam_variant,
    sam_adamw,
    sam_variant,
    sam_variant_names,
)
from flatgen.optim.sam import SAM, global_norm, running_stats_frozen
from flatgen.optim.sam_variants import LookSAM, MomentumSAM, SAMEveryK

__all__ = [
    "EMA",
    "SAM",
    "SAM_VARIANTS",
    "SWA",
    "LookSAM",
    "MomentumSAM",
    "SAMEveryK",
    "global_norm",
    "register_sam_variant",
    "running_stats_frozen",
    "sam_adamw",
    "sam_variant",
    "sam_variant_names",
    "unwrap_model",
]
