"""The records that cross flatgen's seams, and the one place their keys are spelled.

A study measures each (method, seed) into a `MethodResult`; its `metrics` hold flat scalar keys
(built by the functions below) and `metrics[LADDERS]`, one `LadderRecord` per ladder id. The
report reads these records and nothing else. Nothing outside this module spells a metric or
ladder key: import the constants or call the builders.

Ladder ids (metrics[LADDERS][id] holds one ladder record):

- "steps_adm", "steps_ddim": levels T' from many to few steps, clean = quality at the largest T'
- "quant_<w|wa>_<tensor|channel>": levels bits, clean = float quality (same sampler and noise)
- "attack_xt_<linf|l2>_t<t>", "attack_xT_<linf|l2>": levels eps
- "attack_xT_<linf|l2>_dist", "attack_xT_<linf|l2>_flip": the x_T attack scored per sample (the
  mean distance of each attacked sample from its unattacked one; the share whose digit label
  changes)
- "noise_weights": levels sigma
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict


class LadderRecord(TypedDict, total=False):
    """One model's ladder on one seed (flatgen.ladder decides on it). Scores are lower-is-better.

    levels: strengths, weakest first (T' from many to few steps, bits from many to few, eps or
    sigma from small to large); clean: the score without the perturbation; values: the score at
    each level (None where not measured); select_clean / select_values: the same on the separate
    selection noise (None where not measured); per_sample: for per-sample scores, the score of
    each sample at each level (levels x samples), which rank tests may use.
    """

    levels: list[float]
    clean: float
    values: list[float | None]
    select_clean: float | None
    select_values: list[float | None] | None
    metric: str
    level_name: str
    extra: dict[str, Any]
    per_sample: list[list[float]] | None


class MethodResult(TypedDict):
    """One method's measurements on one training seed: study/measure.py writes it (as
    runs/<unit>/eval/study_<method>.json), the report reads it."""

    method: str
    seed: int
    base: str
    weights: Literal["raw", "ema", "swa"] | str
    seconds: float
    metrics: dict[str, Any]  # flat scalar keys, LADDERS, and the *_detail entries below


class StudyResults(TypedDict):
    """What the report is a function of: every finished result and what is missing."""

    rows: list[MethodResult]
    missing: list[str]


def ladders_of(result: MethodResult) -> dict[str, LadderRecord]:
    """metrics[LADDERS] of one result ({} where it has none)."""
    return result["metrics"].get(LADDERS) or {}


# ---------------------------------------------------------------- ladders

LADDERS = "ladders"  # metrics[LADDERS] = {ladder id: ladder record}
STEPS_ADM = "steps_adm"
STEPS_DDIM = "steps_ddim"
NOISE_WEIGHTS = "noise_weights"
QUANT_SCHEMES = ("w", "wa")  # weights only / weights and activations
GRANULARITIES = ("tensor", "channel")
ATTACK_NORMS = ("linf", "l2")
XT_SCORES = ("dist", "flip")  # per-sample scores of the x_T attack


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


def attack_xT_sample_ladder_id(norm: str, score: str) -> str:  # noqa: N802
    """'attack_xT_linf_dist' / 'attack_xT_linf_flip': the x_T attack scored per sample."""
    _check_norm(norm)
    if score not in XT_SCORES:
        raise ValueError(f"x_T score must be one of {', '.join(XT_SCORES)}, got {score!r}")
    return f"attack_xT_{norm}_{score}"


def _check_norm(norm: str) -> None:
    if norm not in ATTACK_NORMS:
        raise ValueError(f"norm must be one of {', '.join(ATTACK_NORMS)}, got {norm!r}")


# ---------------------------------------------------------------- scalar keys

ROBUSTNESS_METRIC = "robustness_metric"  # the quality metric the suites scored with
METRIC_NOTE = "metric_note"  # a ladder record's extra: e.g. "pixel W2: cannot rank"
ROBUSTNESS_DETAIL = "robustness_detail"  # the suites' full results (curves, per-t tables)
# the second-order check (study/expansion.py): its rows, and the share within 25% of measured
EXPANSION = "expansion"
EXPANSION_SHARE = "expansion_share_within_25pct"
# least-squares fits of the measured loss rise on lambda_max ||delta||^2 and on the second-order
# prediction, and of the quality rise on the loss rise (analysis.expansion.expansion_regression)
EXPANSION_REGRESSION = "expansion_regression"
EPS_NORM_GAP_MEAN = "eps_norm_gap_mean"  # mean absolute gap of E||eps||^2 (the former headline)
EXPOSURE_FORMS = ("l2", "sq")  # unsquared L2 norm (ADM-ES's script) / squared norm (the paper)


def quality_key(metric: str, steps: int) -> str:
    """'digits_fid@T20': quality at T' steps of the study's sampler."""
    return f"{metric}@T{int(steps)}"


def quality_key_steps(key: str) -> int | None:
    """T' of a quality_key ('digits_fid@T20' -> 20), None for any other key."""
    _, sep, steps = key.rpartition("@T")
    return int(steps) if sep and steps.isdigit() else None


def is_quality_key(key: str, metric: str) -> bool:
    """Whether `key` is a quality entry (any T', sampler, bits) of `metric`."""
    return key.startswith(f"{metric}@")


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


# ---------------------------------------------------------------- the ladders the claims read

QUANT_W_TENSOR = quant_ladder_id("w", "tensor")  # decides the quantization claim
QUANT_W_CHANNEL = quant_ladder_id("w", "channel")
QUANT_WA_TENSOR = quant_ladder_id("wa", "tensor")
QUANT_WA_CHANNEL = quant_ladder_id("wa", "channel")
ATTACK_XT_LINF_T100 = attack_xt_ladder_id("linf", 100)  # decides the x_t attack claim
ATTACK_XT_LINF_T500 = attack_xt_ladder_id("linf", 500)
ATTACK_XT_L2_T100 = attack_xt_ladder_id("l2", 100)
ATTACK_XT_L2_T500 = attack_xt_ladder_id("l2", 500)
ATTACK_INIT_LINF = attack_xT_ladder_id("linf")  # the initial noise x_T, by set-level quality
ATTACK_INIT_L2 = attack_xT_ladder_id("l2")
ATTACK_INIT_LINF_DIST = attack_xT_sample_ladder_id("linf", "dist")  # per sample
ATTACK_INIT_LINF_FLIP = attack_xT_sample_ladder_id("linf", "flip")
ATTACK_INIT_L2_DIST = attack_xT_sample_ladder_id("l2", "dist")
ATTACK_INIT_L2_FLIP = attack_xT_sample_ladder_id("l2", "flip")

# ---------------------------------------------------------------- flatness and quality scalars

LAMBDA_MAX = "lambda_max"  # top Hessian eigenvalue of the training loss on the fixed batch
HESSIAN_TRACE = "hessian_trace"  # its Hutchinson trace
SHARPNESS_BATCH_LOSS = "sharpness_batch_loss"  # the training loss on that batch
PERTURBATION_DETAIL = "perturbation_detail"  # the loss-under-perturbation curves
WORST_CASE_ASCENT = "worst_case_ascent"  # which ascent found the worst case
WORST = "worst"  # loss_increase_key kinds: the worst case in a per-filter ball of radius rho
NOISE = "noise"  # and the mean under per-filter Gaussian noise of scale sigma
SAMPLE_GRID = "sample_grid"  # the path of a grid of samples saved when the method was measured
QUALITY_KEYS = ("w2", "digits_fid", "kid", "inception_fid", "inception_kid")
CENSORED_SUFFIX = "_censored"  # <key>_censored = 1.0: the value is a bound at a sweep's end


def loss_increase_key(kind: str, radius: float) -> str:
    """'loss_increase_worst@0.1' / 'loss_increase_noise@0.05'."""
    if kind not in (WORST, NOISE):
        raise ValueError(f"kind must be {WORST!r} or {NOISE!r}, got {kind!r}")
    return f"loss_increase_{kind}@{radius:g}"


def loss_increase_radius(key: str, kind: str = WORST) -> float | None:
    """The radius of a loss_increase_key of that kind, None for any other key."""
    prefix = f"loss_increase_{kind}@"
    return float(key[len(prefix):]) if key.startswith(prefix) else None


def floor_key(metric: str) -> str:
    """'floor_digits_fid': the metric between two samples of real data (the best reachable)."""
    return f"floor_{metric}"


def censored_key(key: str) -> str:
    return key + CENSORED_SUFFIX


EXPOSURE_GAP_L2_T20 = exposure_gap_key("l2", 20)  # decides the exposure claim
EXPOSURE_GAP_SQ_T20 = exposure_gap_key("sq", 20)


# ---------------------------------------------------------------- what the report is told

@dataclass(frozen=True)
class ReportMeta:
    """What the report says about the study besides its results (the study layer fills it)."""

    name: str
    data: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    quality_steps: tuple[int, ...] = (20, 100)
    config_json: str = "{}"  # the validated study config, shown at the end of the report
    environment: str = ""  # machine, torch version, threads
    # where the measurements that are not taken on every seed were taken
    measured_where: dict[str, str] = field(default_factory=dict)
    looks: tuple[str, ...] = ()  # sequential studies: one line per look
    # how the numbers were measured: the sampling chain of each sampler, the quality protocol
    protocol: dict[str, str] = field(default_factory=dict)
    # '<base>-s<seed>' -> [(step, loss)]: the training loss of each run, for the loss plot
    training_logs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
