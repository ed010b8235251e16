"""The paper's claims, each checked against the study's numbers with an honest verdict.

Verdicts: with >= 2 seeds per method, a difference counts when it exceeds twice its standard
error; with one seed there are no error bars and the verdict says only which way it points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flatgen.report.stats import mean_std


@dataclass
class Comparison:
    metric: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    n_a: int
    n_b: int
    verdict: str  # "reproduced" | "not reproduced" | "inconclusive" | "points the claimed way (1 seed)" | ...


@dataclass
class Claim:
    text: str
    source: str
    comparisons: list[Comparison]
    verdict: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "verdict": self.verdict, "note": self.note,
                "comparisons": [asdict(c) for c in self.comparisons]}


def _values(rows: Sequence[dict], method: str, metric: str) -> list[float]:
    out = []
    for r in rows:
        v = r["metrics"].get(metric) if r["method"] == method else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def compare(rows: Sequence[dict], metric: str, a: str, b: str, a_should_be: str) -> Comparison | None:
    """Is metric(a) lower/higher than metric(b)? a_should_be: 'lower' or 'higher'."""
    va, vb = _values(rows, a, metric), _values(rows, b, metric)
    if not va or not vb:
        return None
    (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
    claimed = ma < mb if a_should_be == "lower" else ma > mb
    if len(va) < 2 or len(vb) < 2:
        verdict = "points the claimed way (1 seed)" if claimed else "points the other way (1 seed)"
    else:
        se = math.sqrt(sa**2 / len(va) + sb**2 / len(vb))
        if abs(ma - mb) <= 2 * se:
            verdict = "inconclusive"
        else:
            verdict = "reproduced" if claimed else "not reproduced"
    return Comparison(metric, a, b, ma, mb, sa, sb, len(va), len(vb), verdict)


def _overall(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return "not measured"
    verdicts = {c.verdict for c in comparisons}
    if len(verdicts) == 1:
        return verdicts.pop()
    return "mixed: " + "; ".join(f"{c.a} vs {c.b} on {c.metric}: {c.verdict}" for c in comparisons)


def _pairs(methods: Sequence[str], flat: str) -> list[tuple[str, str]]:
    """(flat-method, its baseline) pairs present in the study, e.g. ('sam', 'adm'), ('sam+ema', 'ema')."""
    pairs = []
    for suffix in ("", "+ema", "+swa"):
        a = f"{flat}{suffix}"
        b = suffix.lstrip("+") or "adm"
        if a in methods and b in methods:
            pairs.append((a, b))
    return pairs


def with_quantization_rise(rows: Sequence[dict], metric: str) -> list[dict]:
    """Rows with '<metric>_rise@w<b>-channel' = quantized minus float quality added, so that
    methods are compared by what quantization costs them, not by where they started."""
    out = []
    for r in rows:
        m = r["metrics"]
        base = m.get(f"{metric}@float")
        rise = {f"{metric}_rise@{k.split('@', 1)[1]}": v - base for k, v in m.items()
                if isinstance(base, (int, float)) and k.startswith(f"{metric}@w")
                and isinstance(v, (int, float))}
        out.append({**r, "metrics": {**m, **rise}})
    return out


def _largest_radius(rows: Sequence[dict], prefix: str) -> str | None:
    """The metric key prefix@r with the largest r that any row measured."""
    keys = {k for r in rows for k in r["metrics"] if k.startswith(prefix)}
    return max(keys, key=lambda k: float(k[len(prefix):]), default=None)


def evaluate_claims(rows: Sequence[dict], methods: Sequence[str], steps: Sequence[int], metric: str = "w2") -> list[Claim]:
    """Check each claim of Lee et al. (ICCV 2025) that this study measured."""
    few = min(steps) if steps else 20
    rmetric = next((r["metrics"]["robustness_metric"] for r in rows if "robustness_metric" in r["metrics"]), metric)
    pairs = _pairs(methods, "sam")
    claims: list[Claim] = []

    def claim(text, source, metric_name, direction, pair_list=pairs, note=""):
        comps = [c for a, b in pair_list if (c := compare(rows, metric_name, a, b, direction))]
        involved = {m for c in comps for m in (c.a, c.b)}
        if any(r["metrics"].get(f"{metric_name}_censored") for r in rows if r["method"] in involved):
            note = (note + " " if note else "") + ("Some models never degraded within the sweep; they "
                                                   "count at the largest value tried, a lower bound.")
        claims.append(Claim(text, source, comps, _overall(comps), note))

    claim("SAM finds a flatter minimum: a smaller top Hessian eigenvalue than without SAM.",
          "Lee et al. 2025, sec. 5 (flatness)", "lambda_max", "lower")
    worst = _largest_radius(rows, "loss_increase_worst@")
    if worst:
        claim(f"SAM's loss rises less under worst-case weight perturbations (L2 radius {worst[len('loss_increase_worst@'):]}).",
              "Lee et al. 2025, sec. 5 (loss under perturbation)", worst, "lower")
    claim(f"A flatter minimum samples better with few steps (T'={few}).",
          "Lee et al. 2025, Table 1 (FID at T'=20)", f"{metric}@T{few}", "lower")
    claim("Less exposure bias: a smaller gap in the predicted-noise norm between sampling and training inputs.",
          "Lee et al. 2025 (ADM +11.39 vs SAM +3.32)", "eps_norm_gap_mean", "lower")
    rows = with_quantization_rise(rows, rmetric)
    for bits in (8, 4):
        claim(f"Quality survives {bits}-bit weight quantization better with SAM: it degrades less from float.",
              "Lee et al. 2025 (reported for 8 bits: ADM +13.65 FID, SAM -0.07)", f"{rmetric}_rise@w{bits}-channel", "lower",
              note=f"compares {rmetric} after quantization minus {rmetric} of the same float model "
                   "(the paper's comparison); the absolute values are in the table")
    claim("SAM is more robust to adversarial perturbations of the denoiser input (a larger robust epsilon).",
          "Lee et al. 2025 (press: ~7x stronger attacks)", "robust_eps_denoiser_linf_t100", "higher")
    claim("SAM is more robust to Gaussian weight noise (a larger robust sigma).",
          "Lee et al. 2025 (theory: weight perturbation = prior perturbation)", "robust_eps_weight_noise_sigma", "higher")
    averages = [a for a in ("ema", "swa") if a in methods]
    names = " and ".join(a.upper() for a in averages)
    avg_pairs = [(a, "adm") for a in averages if "adm" in methods]
    claim(f"{names} improve{'s' if len(averages) == 1 else ''} quality over the plain baseline.",
          "Lee et al. 2025, Table 1", f"{metric}@T{few}", "lower", avg_pairs)
    flatter = [("sam", a) for a in averages if "sam" in methods]
    claim(f"{names} flatten{'s' if len(averages) == 1 else ''} less than SAM.", "Lee et al. 2025, sec. 5",
          "lambda_max", "lower", flatter)
    return [c for c in claims if c.verdict != "not measured"]
