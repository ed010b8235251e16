"""Statistics over seeds of the DRO-game comparison and its table.

Stability is measured two ways:
- seed-to-seed spread: the sample standard deviation (ddof = 1) of the final W2 over seeds;
- oscillation: over the last half of training (logged points at iteration >= last / 2), the
  mean absolute difference between successive W2 values, and their sum (the total variation
  of the W2 trace there). A method that settles has small values; one that cycles, large ones.
  W2 is logged every train.eval_every iterations, so both are at that resolution.
"""

from __future__ import annotations

import numpy as np

from flatgen.tabulate import markdown_table

TABLE_COLUMNS = [
    "dataset",
    "method",
    "final W2",
    "seed sd",
    "shifted W2",
    "mean W2 (curve)",
    "iters to thr (hit/seeds)",
    "late W2 std",
    "W2 osc. (last half)",
    "defender cost / radius",
    "s/run",
]


def w2_oscillation(iters: list[int], w2: list[float]) -> dict[str, float | None]:
    """{"mean_abs_diff", "total_variation"} of the W2 trace over the last half of training."""
    half = [w for i, w in zip(iters, w2, strict=True) if i >= iters[-1] / 2]
    if len(half) < 2:
        return {"mean_abs_diff": None, "total_variation": None}
    diffs = np.abs(np.diff(np.asarray(half, dtype=float)))
    return {"mean_abs_diff": float(diffs.mean()), "total_variation": float(diffs.sum())}


def _sd(values: list[float]) -> float | None:
    """Sample standard deviation over seeds; None with one seed (there is no spread)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _iters_to(curve: list[float], iters: list[int], threshold: float) -> int | None:
    return next((i for i, w in zip(iters, curve, strict=True) if w <= threshold), None)


def _defenders(rs: list[dict]) -> dict[str, float | None]:
    d = [r["defenders"] for r in rs]
    costs = [x["cost_last_half"] for x in d]
    return {
        "defender_radius": d[0]["radius"],
        "defender_cost_mean": float(np.mean(costs)),
        "defender_cost_sd": _sd(costs),
        "gamma_final_mean": float(np.mean([x["gamma_final"] for x in d])),
    }


def summarize(
    runs: dict[str, list[dict]], converge_fraction: float
) -> tuple[dict[str, dict], float]:
    """Per-method statistics over seeds, and the convergence threshold used.

    The threshold is best + (1 - converge_fraction) * (initial - best), with best the lowest
    mean final W2 among methods and initial the mean W2 at iteration 0.
    """
    best = min(float(np.mean([r["final_w2"] for r in rs])) for rs in runs.values())
    start = float(np.mean([r["w2"][0] for rs in runs.values() for r in rs]))
    threshold = best + (1 - converge_fraction) * (start - best)
    out = {}
    for method, rs in runs.items():
        finals = np.array([r["final_w2"] for r in rs])
        shifted = np.array([r["shifted_w2"] for r in rs])
        reached = [_iters_to(r["w2"], r["iters"], threshold) for r in rs]
        hit = [x for x in reached if x is not None]
        quarter = [r["w2"][-max(2, len(r["w2"]) // 4) :] for r in rs]
        osc = [r["w2_oscillation"] for r in rs if r["w2_oscillation"] is not None]
        tv = [r["w2_total_variation"] for r in rs if r["w2_total_variation"] is not None]
        out[method] = {
            "final_w2_mean": float(finals.mean()),
            "final_w2_std": float(finals.std()),
            "final_w2_seed_sd": _sd(list(finals)),
            "shifted_w2_mean": float(shifted.mean()),
            "shifted_w2_std": float(shifted.std()),
            "mean_w2_over_training": float(np.mean([np.mean(r["w2"]) for r in rs])),
            "iters_to_threshold": reached,
            "iters_to_threshold_mean": float(np.mean(hit)) if hit else None,
            "late_w2_std": float(np.mean([np.std(q) for q in quarter])),
            "w2_oscillation_mean": float(np.mean(osc)) if osc else None,
            "w2_oscillation_sd": _sd(osc),
            "w2_total_variation_mean": float(np.mean(tv)) if tv else None,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
            "seeds": [r["seed"] for r in rs],
        }
        if all(r.get("defenders") for r in rs):
            out[method].update(_defenders(rs))
    return out, threshold


def _pm(s: dict, key: str, n_seeds: int) -> str:
    # one seed has no spread: print the value alone rather than a misleading "± 0"
    return f"{s[key + '_mean']:.4f}" + (f" ± {s[key + '_std']:.4f}" if n_seeds > 1 else "")


def _opt(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _defender_cell(s: dict) -> str:
    if "defender_cost_mean" not in s:
        return ""
    radius = s["defender_radius"]
    return f"{s['defender_cost_mean']:.4f} / " + ("none" if radius is None else f"{radius:g}")


def table_rows(datasets: dict[str, dict]) -> list[list[str]]:
    """One row per dataset x method, then the dataset's reference row (TABLE_COLUMNS)."""
    rows = []
    for label, d in datasets.items():
        for method, s in d["summary"].items():
            hit = [x for x in s["iters_to_threshold"] if x is not None]
            to_thr = f"{s['iters_to_threshold_mean']:.0f}" if hit else "-"
            n_seeds = len(s["iters_to_threshold"])
            rows.append(
                [
                    label,
                    method,
                    _pm(s, "final_w2", n_seeds),
                    _opt(s["final_w2_seed_sd"]),
                    _pm(s, "shifted_w2", n_seeds),
                    f"{s['mean_w2_over_training']:.4f}",
                    f"{to_thr} ({len(hit)}/{len(s['iters_to_threshold'])})",
                    f"{s['late_w2_std']:.4f}",
                    _opt(s["w2_oscillation_mean"]),
                    _defender_cell(s),
                    f"{s['wall_s_mean']:.1f}",
                ]
            )
        ref = d["reference"]
        rows.append(
            [label, "(train subset)", f"{ref['w2']:.4f}", "", f"{ref['shifted_w2']:.4f}", ""]
            + [f"thr = {d['threshold']:.4f}", "", "", "", ""]
        )
    return rows


def format_markdown(rows: list[list[str]]) -> str:
    """A GitHub-markdown table with TABLE_COLUMNS."""
    return markdown_table(TABLE_COLUMNS, rows)
