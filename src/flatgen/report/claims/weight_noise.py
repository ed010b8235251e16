"""SAM is more robust to Gaussian weight noise: the robust σ on the rise over its own clean."""

from flatgen.records import NOISE_WEIGHTS
from flatgen.report.claims.registry import ClaimSpec, SourceEffect, register

WEIGHT_NOISE = register(ClaimSpec(
    id="weight_noise", kind="threshold", key=NOISE_WEIGHTS, direction="higher",
    statistic="robust level", title="Weight noise: larger robust σ",
    text="SAM is more robust to Gaussian weight noise (a larger robust σ).",
    source="Lee et al. 2025 (theory: weight perturbation = prior perturbation)",
    # the source states no size: a 1.5x larger robust sigma is the smallest effect of interest
    source_effect=SourceEffect(1.5, "ratio", "smallest effect of interest: robust σ ×1.5",
                               stated=False),
    decides="robust σ (relative, per filter), scored by sample quality",
))
