"""SAM finds a flatter minimum: lambda_max and the Hessian trace, which SAM does not optimize."""

from flatgen.report.claims.registry import ClaimSpec, register

SOURCE = "Lee et al. 2025, sec. 5 (flatness)"

LAMBDA_MAX = register(ClaimSpec(
    id="flatter_lambda_max", kind="scalar", key="lambda_max", direction="lower", source=SOURCE,
    text="SAM finds a flatter minimum: a smaller top Hessian eigenvalue λmax than without SAM.",
    decides="λmax of the training loss on a fixed batch (primary: SAM does not optimize it)",
    extra={"regime": "λmax, fixed batch"},
))
TRACE = register(ClaimSpec(
    id="flatter_trace", kind="scalar", key="hessian_trace", direction="lower", source=SOURCE,
    text="SAM finds a flatter minimum: a smaller Hessian trace than without SAM.",
    decides="Hutchinson trace of the training-loss Hessian on a fixed batch (primary evidence)",
    extra={"regime": "trace, fixed batch"},
))
