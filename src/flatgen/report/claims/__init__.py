"""The paper's claims (Lee et al., ICCV 2025), one module per claim, judged from the study's rows.

Importing this package registers every claim in CLAIMS, in the order the report lists them.
"""

# the import order is the order the report lists the claims in
# isort: off
from flatgen.report.claims import (  # noqa: F401  (each module registers its claims)
    flatness,
    worst_case,
    few_steps,
    exposure,
    quantization,
    attacks,
    weight_noise,
    averages,
)
# isort: on
from flatgen.report.claims.evaluate import (
    VERDICT_DEFAULTS,
    ClaimResult,
    Comparison,
    evaluate_claims,
    verdict_settings,
)
from flatgen.report.claims.registry import CLAIMS, ClaimContext, ClaimSpec, register

__all__ = ["CLAIMS", "VERDICT_DEFAULTS", "ClaimContext", "ClaimResult", "ClaimSpec", "Comparison",
           "evaluate_claims", "register", "verdict_settings"]
