"""SAM finds a flatter minimum: lambda_max and the Hessian trace, which SAM does not optimize."""

from flatgen.records import HESSIAN_TRACE, LAMBDA_MAX
from flatgen.report.claims.registry import ClaimSpec, SourceEffect, register

SOURCE = "Lee et al. 2025, sec. 5 (flatness)"
# the source shows flatter minima without one number to compare; a 25% smaller curvature is the
# smallest effect of interest here (verdicts.smallest_effects overrides it)
SESOI = SourceEffect(-0.25, "relative", "smallest effect of interest: 25% lower", stated=False)

LAMBDA_MAX_CLAIM = register(ClaimSpec(
    id="flatter_lambda_max", kind="scalar", key=LAMBDA_MAX, direction="lower", source=SOURCE,
    title="SAM is flatter: smaller λmax",
    text="SAM finds a flatter minimum: a smaller top Hessian eigenvalue λmax than without SAM.",
    decides="λmax of the training loss on a fixed batch (primary: SAM does not optimize it)",
    source_effect=SESOI, extra={"regime": "λmax, fixed batch"},
))
TRACE = register(ClaimSpec(
    id="flatter_trace", kind="scalar", key=HESSIAN_TRACE, direction="lower", source=SOURCE,
    title="SAM is flatter: smaller Hessian trace",
    text="SAM finds a flatter minimum: a smaller Hessian trace than without SAM.",
    decides="Hutchinson trace of the training-loss Hessian on a fixed batch (primary evidence)",
    source_effect=SESOI, extra={"regime": "trace, fixed batch"},
))
