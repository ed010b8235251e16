"""SAM's loss rises less under worst-case weight perturbations (supporting flatness evidence).

With SAM's own ascent (normalized gradient in an L2 ball) this is SAM's own objective, close to
built in; only a different ascent ("pgd-filter") makes it evidence SAM does not optimize.
"""

from flatgen.records import PERTURBATION_DETAIL, WORST_CASE_ASCENT, loss_increase_radius
from flatgen.report.claims.registry import ClaimContext, ClaimSpec, register

PGD_FILTER = "pgd-filter"


def largest_radius(ctx: ClaimContext) -> str | None:
    """The worst-case loss increase key with the largest radius any row measured."""
    keys = {k for r in ctx.rows for k in r["metrics"] if loss_increase_radius(k) is not None}
    return max(keys, key=loss_increase_radius, default=None)


def ascent_of(row: dict) -> str:
    m = row["metrics"]
    curve = (m.get(PERTURBATION_DETAIL) or {}).get("worst_case") or {}
    return str(m.get(WORST_CASE_ASCENT) or curve.get("ascent") or "sam-ascent")


def ascent_label(ctx: ClaimContext) -> str:
    if ctx.rows and all(ascent_of(r) == PGD_FILTER for r in ctx.rows):
        return "multi-step PGD in a filter-normalized ball, an ascent SAM does not run"
    return "SAM's own objective (its normalized-gradient ascent): close to built in"


WORST_CASE = register(ClaimSpec(
    id="worst_case_loss", kind="scalar", key=largest_radius, direction="lower",
    title="Worst-case weight perturbation: smaller loss rise (supporting)",
    text="SAM's loss rises less under worst-case weight perturbations.",
    source="Lee et al. 2025, sec. 5 (loss under perturbation)",
    decides="supporting evidence, not in the family", label=ascent_label, in_family=False,
    extra={"regime": lambda key: f"per-filter ball ρ={loss_increase_radius(key):g}"},
))
