"""SAM is more robust to Gaussian weight noise: the robust σ at one shared threshold."""

from flatgen.records import NOISE_WEIGHTS
from flatgen.report.claims.registry import ClaimSpec, register

WEIGHT_NOISE = register(ClaimSpec(
    id="weight_noise", kind="threshold", key=NOISE_WEIGHTS, direction="higher",
    statistic="robust level",
    text="SAM is more robust to Gaussian weight noise (a larger robust σ).",
    source="Lee et al. 2025 (theory: weight perturbation = prior perturbation)",
    decides="robust σ (relative, per filter), scored by sample quality",
))
