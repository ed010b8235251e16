"""Weight averages: EMA (and SWA) improve quality; they flatten less than SAM."""

from flatgen.records import LAMBDA_MAX, quality_key, quality_key_steps
from flatgen.report.claims.registry import ClaimContext, ClaimSpec, SourceEffect, register


def fewest_steps_key(ctx: ClaimContext) -> str | None:
    """Quality at the fewest steps the study measured (the paper's T'=20 in its default)."""
    return quality_key(ctx.quality_metric, min(ctx.steps)) if ctx.steps else None


EMA_QUALITY = register(ClaimSpec(
    id="ema_quality", kind="scalar", key=fewest_steps_key, direction="lower",
    pairs=(("ema", "adm"), ("swa", "adm")), title="EMA improves quality",
    text="EMA improves quality over the plain baseline.", source="Lee et al. 2025, Table 1",
    source_effect=SourceEffect(-0.69, "relative", "−69% FID at T'=20 (34.47 → 10.63)"),
    decides="quality at the fewest T' of the quality table (evaluations.quality_steps; the "
            "paper's T'=20 in the demo)",
    extra={"regime": lambda key: f"quality at T'={quality_key_steps(key)}"},
))
EMA_FLATNESS = register(ClaimSpec(
    id="ema_flattens_less", kind="scalar", key=LAMBDA_MAX, direction="lower",
    pairs=(("sam", "ema"), ("sam", "swa")), title="EMA flattens less than SAM",
    text="EMA flattens less than SAM: SAM's λmax is smaller than EMA's.",
    source="Lee et al. 2025, sec. 5",
    source_effect=SourceEffect(-0.25, "relative", "smallest effect of interest: 25% lower",
                               stated=False),
    decides="λmax on a fixed batch", extra={"regime": "λmax, fixed batch"},
))
