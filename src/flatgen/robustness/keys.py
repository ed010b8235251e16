"""The names the robustness suites write and the claims read, defined once.

Ladder ids (metrics["ladders"][LADDER_ID] holds one ladder record, see flatgen.ladder):

- "steps_adm", "steps_ddim": levels T' from many to few steps, clean = quality at the largest T'
- "quant_<w|wa>_<tensor|channel>": levels bits, clean = float quality (same sampler and noise)
- "attack_xt_<linf|l2>_t<t>", "attack_xT_<linf|l2>": levels eps
- "noise_weights": levels sigma

Scalar metric keys are flat entries of metrics (one number per method and seed). Nothing else
should spell these strings: import the constants or call the builders.
"""

from __future__ import annotations

# ---------------------------------------------------------------- ladders

LADDERS = "ladders"  # metrics[LADDERS] = {ladder id: ladder record}
STEPS_ADM = "steps_adm"
STEPS_DDIM = "steps_ddim"
NOISE_WEIGHTS = "noise_weights"
QUANT_SCHEMES = ("w", "wa")  # weights only / weights and activations
GRANULARITIES = ("tensor", "channel")
ATTACK_NORMS = ("linf", "l2")


def steps_ladder_id(sampler: str) -> str:
    """'steps_adm' or 'steps_ddim'."""
    if sampler not in ("adm", "ddim"):
        raise ValueError(f"sampler must be adm or ddim, got {sampler!r}")
    return f"steps_{sampler}"


def quant_ladder_id(scheme: str, granularity: str) -> str:
    """'quant_w_channel', 'quant_wa_tensor', ..."""
    if scheme not in QUANT_SCHEMES or granularity not in GRANULARITIES:
        raise ValueError(f"quant ladder needs scheme in {QUANT_SCHEMES} and granularity in "
                         f"{GRANULARITIES}, got {scheme!r}, {granularity!r}")
    return f"quant_{scheme}_{granularity}"


def attack_xt_ladder_id(norm: str, t: int) -> str:
    """'attack_xt_linf_t100': PGD on the denoiser input at timestep t."""
    _check_norm(norm)
    return f"attack_xt_{norm}_t{int(t)}"


def attack_xT_ladder_id(norm: str) -> str:  # noqa: N802 - x_T, as in the contract
    """'attack_xT_l2': PGD on the sampler's initial noise."""
    _check_norm(norm)
    return f"attack_xT_{norm}"


def _check_norm(norm: str) -> None:
    if norm not in ATTACK_NORMS:
        raise ValueError(f"norm must be one of {', '.join(ATTACK_NORMS)}, got {norm!r}")


# ---------------------------------------------------------------- scalar keys

ROBUSTNESS_METRIC = "robustness_metric"  # the quality metric the suites scored with
ROBUSTNESS_DETAIL = "robustness_detail"  # the suites' full results (curves, per-t tables)
EPS_NORM_GAP_MEAN = "eps_norm_gap_mean"  # mean absolute gap of E||eps||^2 (the former headline)
EXPOSURE_FORMS = ("l2", "sq")  # unsquared L2 norm (ADM-ES's script) / squared norm (the paper)


def quality_key(metric: str, steps: int) -> str:
    """'digits_fid@T20': quality at T' steps of the study's sampler."""
    return f"{metric}@T{int(steps)}"


def steps_quality_key(metric: str, sampler: str, steps: int) -> str:
    """'digits_fid@adm20': one point of a steps ladder."""
    return f"{metric}@{sampler}{int(steps)}"


def float_quality_key(metric: str) -> str:
    """'digits_fid@float': the unquantized model's quality on the quantization sampler."""
    return f"{metric}@float"


def quant_quality_key(metric: str, bits: int, granularity: str, *, scheme: str = "w") -> str:
    """'digits_fid@w8-channel' (weights only), 'digits_fid@w8a8-channel' (and activations)."""
    act = f"a{int(bits)}" if scheme == "wa" else ""
    return f"{metric}@w{int(bits)}{act}-{granularity}"


def exposure_gap_key(form: str, steps: int) -> str:
    """'exposure_gap_l2@T20': the relative gap (sampling - training) / training of the mean
    eps-norm, averaged over the sampled timesteps. The verdict uses form 'l2'."""
    _check_form(form)
    return f"exposure_gap_{form}@T{int(steps)}"


def exposure_gap_sampler_only_key(form: str, steps: int) -> str:
    """'exposure_gap_sampler_only_l2@T20': the same gap for Gaussian data with the data's mean
    and variance and its exact denoiser, in closed form: the part the sampler alone causes."""
    _check_form(form)
    return f"exposure_gap_sampler_only_{form}@T{int(steps)}"


def _check_form(form: str) -> None:
    if form not in EXPOSURE_FORMS:
        raise ValueError(f"exposure form must be one of {', '.join(EXPOSURE_FORMS)}, got {form!r}")


def delta_mean_key(hop: int | None) -> str:
    """'delta_mean_hop1' (chains of one respaced step), 'delta_mean_full' (chains from the top
    timestep): the variance error delta_t averaged over the timesteps."""
    return "delta_mean_full" if hop is None else f"delta_mean_hop{int(hop)}"


def robust_eps_key(name: str) -> str:
    """'robust_eps_denoiser_linf_t100' etc.: a robust strength from the attack and noise sweeps."""
    return f"robust_eps_{name}"
