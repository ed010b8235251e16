"""Weight averages: EMA (and SWA) improve quality; they flatten less than SAM."""

from flatgen.report.claims.registry import ClaimContext, ClaimSpec, register


def quality_key(ctx: ClaimContext) -> str | None:
    """Quality at the fewest steps the study measured (the paper's T'=20 in its default)."""
    return f"{ctx.quality_metric}@T{min(ctx.steps)}" if ctx.steps else None


EMA_QUALITY = register(ClaimSpec(
    id="ema_quality", kind="scalar", key=quality_key, direction="lower",
    pairs=(("ema", "adm"), ("swa", "adm")),
    text="EMA improves quality over the plain baseline.", source="Lee et al. 2025, Table 1",
    decides="quality at the fewest steps measured",
))
EMA_FLATNESS = register(ClaimSpec(
    id="ema_flattens_less", kind="scalar", key="lambda_max", direction="lower",
    pairs=(("sam", "ema"), ("sam", "swa")),
    text="EMA flattens less than SAM: SAM's λmax is smaller than EMA's.",
    source="Lee et al. 2025, sec. 5", decides="λmax on a fixed batch",
    extra={"regime": "λmax, fixed batch"},
))
