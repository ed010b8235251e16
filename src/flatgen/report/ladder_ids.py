"""The ladder ids the claims read from metrics["ladders"] (see flatgen.ladder for the record).

The ONE place in report/ that spells them. The contract puts them in flatgen.robustness.keys;
until that module is on main, report/ keeps these strings here, and then imports them from there.
"""

from __future__ import annotations

STEPS_ADM = "steps_adm"  # ADM ancestral sampler: decides the few-step claim
STEPS_DDIM = "steps_ddim"  # reported beside it
QUANT_W_TENSOR = "quant_w_tensor"  # decides the quantization claim
QUANT_W_CHANNEL = "quant_w_channel"
QUANT_WA_TENSOR = "quant_wa_tensor"
QUANT_WA_CHANNEL = "quant_wa_channel"
ATTACK_XT_LINF_T100 = "attack_xt_linf_t100"  # decides the x_t attack claim
ATTACK_XT_LINF_T500 = "attack_xt_linf_t500"
ATTACK_XT_L2_T100 = "attack_xt_l2_t100"
ATTACK_XT_L2_T500 = "attack_xt_l2_t500"
ATTACK_INIT_LINF = "attack_xT_linf"  # the initial noise x_T
ATTACK_INIT_L2 = "attack_xT_l2"
NOISE_WEIGHTS = "noise_weights"
