"""Robustness to adversarial inputs: x_t of the denoiser, and the initial noise x_T."""

from flatgen.records import (
    ATTACK_INIT_L2,
    ATTACK_INIT_LINF,
    ATTACK_XT_L2_T100,
    ATTACK_XT_L2_T500,
    ATTACK_XT_LINF_T100,
    ATTACK_XT_LINF_T500,
)
from flatgen.report.claims.registry import ClaimSpec, register

ATTACK_XT = register(ClaimSpec(
    id="adversarial_xt", kind="threshold", key=ATTACK_XT_LINF_T100, direction="higher",
    statistic="robust level",
    text="SAM is more robust to adversarial perturbations of the denoiser input x_t "
         "(a larger robust ε).",
    source="Lee et al. 2025 (press: attacks about 7x stronger)",
    supporting_keys=(ATTACK_XT_LINF_T500, ATTACK_XT_L2_T100, ATTACK_XT_L2_T500),
    decides="robust ε of the L∞ attack at t=100 (loss against the consistent target)",
))
ATTACK_INIT = register(ClaimSpec(
    id="adversarial_xT", kind="threshold", key=ATTACK_INIT_LINF, direction="higher",
    statistic="robust level",
    text="SAM is more robust to adversarial perturbations of the initial noise x_T.",
    source="Lee et al. 2025 (robustness of the sampling chain)",
    supporting_keys=(ATTACK_INIT_L2,),
    decides="robust ε of the L∞ attack on x_T, scored by sample quality",
))
