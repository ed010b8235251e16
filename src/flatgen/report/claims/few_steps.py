"""A flatter minimum samples better with few steps: the ADM sampler's steps ladder decides."""

from flatgen.records import STEPS_ADM, STEPS_DDIM
from flatgen.report.claims.registry import ClaimSpec, register

FEW_STEPS = register(ClaimSpec(
    id="few_step_sampling", kind="degradation", key=STEPS_ADM, direction="lower",
    text="A flatter minimum samples better with few sampling steps.",
    source="Lee et al. 2025, Table 1 (CIFAR-10 FID at T'=20: ADM 34.47, SAM 9.01)",
    supporting_keys=(STEPS_DDIM,), level_name="T'", level_format="T'={level:g}",
    decides="quality at the judged T' with the ADM ancestral sampler; DDIM beside it",
))
