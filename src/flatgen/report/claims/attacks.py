"""Robustness to adversarial inputs: x_t of the denoiser, and the initial noise x_T."""

from flatgen.records import (
    ATTACK_INIT_L2_FLIP,
    ATTACK_INIT_LINF,
    ATTACK_INIT_LINF_FLIP,
    ATTACK_XT_L2_T100,
    ATTACK_XT_L2_T500,
    ATTACK_XT_LINF_T100,
    ATTACK_XT_LINF_T500,
)
from flatgen.report.claims.registry import ClaimSpec, SourceEffect, register

# the press release's "attacks about 7x stronger" (protocol unstated, ANCHORS.md sec. 8)
SEVEN_X = SourceEffect(7.0, "ratio", "robust ε ×7 (press release: attacks about 7x stronger)")
FLIP_SHARE = 0.25  # the x_T attack breaks a model where a quarter of its digits change label

ATTACK_XT = register(ClaimSpec(
    id="adversarial_xt", kind="threshold", key=ATTACK_XT_LINF_T100, direction="higher",
    statistic="robust level", title="Attack on x_t: larger robust ε",
    text="SAM is more robust to adversarial perturbations of the denoiser input x_t "
         "(a larger robust ε).",
    source="Lee et al. 2025 (press: attacks about 7x stronger)",
    supporting_keys=(ATTACK_XT_LINF_T500, ATTACK_XT_L2_T100, ATTACK_XT_L2_T500),
    source_effect=SEVEN_X,
    decides="robust ε of the L∞ attack at t=100 (loss against the consistent target)",
))
ATTACK_INIT = register(ClaimSpec(
    id="adversarial_xT", kind="threshold", key=ATTACK_INIT_LINF_FLIP, direction="higher",
    statistic="robust level", title="Attack on x_T: larger robust ε",
    text="SAM is more robust to adversarial perturbations of the initial noise x_T.",
    source="Lee et al. 2025 (robustness of the sampling chain)",
    supporting_keys=(ATTACK_INIT_L2_FLIP, ATTACK_INIT_LINF), threshold=FLIP_SHARE,
    source_effect=SEVEN_X,
    decides=f"robust ε of the L∞ attack on x_T: where over {FLIP_SHARE:.0%} of the samples "
            "change their digit label (per sample, the digits classifier)",
    # the share threshold belongs to the label-flip ladders; the set-level quality ladder beside
    # them is judged by the margin rule like every other score
    extra={"threshold_text": f"over {FLIP_SHARE:.0%} of the digit labels change",
           "threshold_keys": (ATTACK_INIT_LINF_FLIP, ATTACK_INIT_L2_FLIP),
           "ylabel": "share of digit labels changed (rise over clean)"},
))
