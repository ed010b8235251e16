"""Less exposure bias: the unsquared relative gap (ADM-ES's form) decides, squared beside it."""

from flatgen.records import EXPOSURE_GAP_L2_T20, EXPOSURE_GAP_SQ_T20
from flatgen.report.claims.registry import ClaimSpec, SourceEffect, register

EXPOSURE = register(ClaimSpec(
    id="exposure_bias", kind="scalar", key=EXPOSURE_GAP_L2_T20, direction="lower",
    title="Exposure bias: smaller ε-norm gap",
    text="Less exposure bias: a smaller gap in the predicted-noise norm between sampling and "
         "training inputs.",
    source="Lee et al. 2025 (ADM +11.39 vs SAM +3.32)",
    supporting_keys=(EXPOSURE_GAP_SQ_T20,),
    source_effect=SourceEffect(-0.71, "relative", "−71% gap (ADM +11.39 → SAM +3.32)"),
    decides="the unsquared relative L2 gap at T'=20 (ADM-ES's form); the squared form beside",
    extra={"regime": lambda key: "T'=20, " + ("unsquared" if key == EXPOSURE_GAP_L2_T20
                                              else "squared") + " relative gap"},
))
