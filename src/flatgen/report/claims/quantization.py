"""Quality survives weight quantization better with SAM: the rise from float at the judged bits."""

from flatgen.records import (
    QUANT_W_CHANNEL,
    QUANT_W_TENSOR,
    QUANT_WA_CHANNEL,
    QUANT_WA_TENSOR,
)
from flatgen.report.claims.registry import ClaimSpec, register

QUANTIZATION = register(ClaimSpec(
    id="quantization", kind="degradation", key=QUANT_W_TENSOR, direction="lower",
    statistic="rise",
    text="Quality survives weight quantization better with SAM: it degrades less from float.",
    source="Lee et al. 2025 (8 bits: ADM +13.65 FID, SAM -0.07)",
    supporting_keys=(QUANT_W_CHANNEL, QUANT_WA_TENSOR, QUANT_WA_CHANNEL),
    level_name="bits", level_format="float→{level:g} bits per-tensor",
    decides="the rise from float at the judged bits, weights per-tensor; other schemes beside",
))
