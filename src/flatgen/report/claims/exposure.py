"""Less exposure bias: the unsquared relative gap (ADM-ES's form) decides, squared beside it."""

from flatgen.report.claims.registry import ClaimSpec, register

EXPOSURE = register(ClaimSpec(
    id="exposure_bias", kind="scalar", key="exposure_gap_l2@T20", direction="lower",
    text="Less exposure bias: a smaller gap in the predicted-noise norm between sampling and "
         "training inputs.",
    source="Lee et al. 2025 (ADM +11.39 vs SAM +3.32)",
    supporting_keys=("exposure_gap_sq@T20",),
    decides="the unsquared relative L2 gap at T'=20 (ADM-ES's form); the squared form beside",
    extra={"regime": "T'=20, unsquared relative gap"},
))
