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
    ClaimResult,
    Comparison,
    evaluate_claims,
    is_decided,
)
from flatgen.report.claims.registry import (
    CLAIMS,
    ClaimContext,
    ClaimSpec,
    SourceEffect,
    register,
)
from flatgen.report.claims.verdicts import Sequential, Verdicts

__all__ = ["CLAIMS", "ClaimContext", "ClaimResult", "ClaimSpec", "Comparison", "Sequential",
           "SourceEffect", "Verdicts", "evaluate_claims", "is_decided", "register"]
