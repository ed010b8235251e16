"""The study's outputs: mean ± std table, Spearman correlations, verdict, scatter plot, CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flatgen.classify.config import ClassifierStudyConfig
from flatgen.classify.evaluate import SHARPNESS_KEYS, robust_key
from flatgen.io import atomic_write, write_json_atomic, write_text_atomic
from flatgen.robustness.util import jsonable

CORRELATED = ("lambda_max", "trace", "worst_case")  # the measures the verdict is about
NORM_LABEL = {"linf": "L∞", "l2": "L2"}
MASKING_GAP = 0.1  # accuracy drop under the logits / T attack that we call gradient masking


def robust_keys(cfg: ClassifierStudyConfig) -> list[str]:
    """Robust-accuracy columns in table order: per norm, per attack, per eps."""
    return [
        robust_key(a, n, e)
        for n, eps in (("linf", cfg.attacks.eps_linf), ("l2", cfg.attacks.eps_l2))
        for a in cfg.attacks.attacks
        for e in eps
    ]


def target_key(cfg: ClassifierStudyConfig) -> str:
    return robust_key(cfg.correlation.attack, cfg.correlation.norm, cfg.target_eps)


def _header(key: str) -> str:
    attack, rest = key.split("-", 1)
    norm, eps = rest.split("@")
    return f"{attack.upper()}-{NORM_LABEL[norm]} ε={eps}"


def sharpness_labels(cfg: ClassifierStudyConfig) -> dict[str, str]:
    s = cfg.sharpness
    return {
        "lambda_max": "λ_max",
        "trace": "trace",
        "worst_case": f"worst-case Δ (ρ={s.rho:g})",
        "average_case": f"avg-case Δ (σ={s.sigma:g})",
    }


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """One run as a flat record: method, seed, clean, robust columns, sharpness, extras."""
    out = {"method": row["method"], "seed": row["seed"], **row["robust"]}
    out.update({k: row["sharpness"][k] for k in (*SHARPNESS_KEYS, "loss")})
    out.update({f"{k}/T": v for k, v in row["extra"].get("at_temperature", {}).items()})
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def method_means(cfg: ClassifierStudyConfig, rows: list[dict]) -> dict[str, dict[str, list]]:
    """method -> column -> [mean, std, n] over seeds, in config order."""
    flat = [flat_row(r) for r in rows]
    out: dict[str, dict[str, list]] = {}
    for m in (m.label for m in cfg.methods):
        mine = [r for r in flat if r["method"] == m]
        if mine:
            keys = [k for k in mine[0] if k not in ("method", "seed")]
            out[m] = {k: [*_mean_std([r[k] for r in mine]), len(mine)] for k in keys}
    return out


def table_markdown(cfg: ClassifierStudyConfig, means: dict[str, dict[str, list]]) -> str:
    """Markdown table: clean and robust accuracy, sharpness (mean ± std over seeds)."""
    keys, sharp = robust_keys(cfg), sharpness_labels(cfg)
    head = ["method", "n", "clean", *map(_header, keys), *sharp.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, cols in means.items():
        cells = [method, str(cols["clean"][2])]
        cells += [f"{cols[k][0]:.3f} ± {cols[k][1]:.3f}" for k in ("clean", *keys)]
        cells += [f"{cols[k][0]:.3g} ± {cols[k][1]:.2g}" for k in sharp]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spearman(xs: list[float], ys: list[float]) -> dict[str, float | int | None]:
    """Spearman's rho and its two-sided p-value; None where undefined (n < 3, a constant)."""
    from scipy.stats import spearmanr

    n = len(xs)
    if n < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return {"rho": None, "p": None, "n": n}
    res = spearmanr(xs, ys)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": n}


def correlations(cfg: ClassifierStudyConfig, rows: list[dict]) -> dict[str, dict[str, dict]]:
    """measure -> robust column -> Spearman over the trained models (one point per run)."""
    flat = [flat_row(r) for r in rows]
    out: dict[str, dict[str, dict]] = {}
    for s in SHARPNESS_KEYS:
        out[s] = {}
        for k in ("clean", *robust_keys(cfg)):
            pts = [(r[s], r[k]) for r in flat if r.get(s) is not None and r.get(k) is not None]
            out[s][k] = spearman([p[0] for p in pts], [p[1] for p in pts])
    return out


def _fmt_corr(c: dict) -> str:
    return "undefined" if c["rho"] is None else f"ρ = {c['rho']:+.2f} (p = {c['p']:.2g})"


@dataclass
class Group:
    """The trained models one set of correlations is computed over."""

    label: str
    methods: list[str]
    n: int
    corr: dict  # measure -> robust column -> {rho, p, n}


def masked_methods(cfg: ClassifierStudyConfig, means: dict) -> dict[str, tuple[str, float, float]]:
    """method -> (column, accuracy at T = 1, accuracy when PGD attacks logits / T) for methods
    whose PGD accuracy drops by more than MASKING_GAP once the softmax is unsaturated."""
    out = {}
    for m, cols in means.items():
        gaps = [(k, cols[k][0], cols[f"{k}/T"][0]) for k in robust_keys(cfg) if f"{k}/T" in cols]
        gaps = [g for g in gaps if g[1] - g[2] > MASKING_GAP]
        if gaps:
            out[m] = max(gaps, key=lambda g: g[1] - g[2])
    return out


def correlation_groups(cfg: ClassifierStudyConfig, rows: list[dict], masked: dict) -> list[Group]:
    """All models; without the gradient-masked methods (if any); each configured subset (also
    without masked methods)."""

    def group(label: str, keep: list[dict]) -> Group:
        methods = list(dict.fromkeys(r["method"] for r in keep))
        return Group(label, methods, len(keep), correlations(cfg, keep))

    groups = [group("all", rows)]
    valid = [r for r in rows if r["method"] not in masked]
    if masked:
        groups.append(group("without gradient-masked", valid))
    for name, methods in cfg.correlation.subsets.items():
        groups.append(group(name, [r for r in valid if r["method"] in methods]))
    return groups


def _call(g: Group, key: str, alpha: float) -> str:
    """Whether the claimed negative correlation shows in a group, in words."""
    sig = [
        g.corr[s][key]["rho"]
        for s in CORRELATED
        if g.corr[s][key]["rho"] is not None and g.corr[s][key]["p"] < alpha
    ]
    neg, pos, total = sum(r < 0 for r in sig), sum(r > 0 for r in sig), len(CORRELATED)
    if neg and not pos:
        return f"the link shows ({neg} of {total} measures significantly negative)"
    if pos and not neg:
        return (
            f"the link is reversed ({pos} of {total} measures significantly positive: "
            "the sharper models were the more robust)"
        )
    if neg and pos:
        return "the measures disagree (significant correlations of both signs)"
    return "the link does not show (no measure significant)"


def verdict(cfg: ClassifierStudyConfig, groups: list[Group], means: dict, masked: dict) -> str:
    """One paragraph: does sharper go with lower robust accuracy, plus the caveats seen.

    The headline is over the models whose robust accuracy can be trusted (gradient-masked
    methods left out where there are any); all models and each configured subset follow.
    """
    key, alpha, names = target_key(cfg), cfg.correlation.alpha, sharpness_labels(cfg)

    def numbers(g: Group) -> str:
        return "; ".join(f"{names[s]} {_fmt_corr(g.corr[s][key])}" for s in CORRELATED)

    main = groups[1] if masked else groups[0]
    over = f"{main.n} trained models" + (f" (without {', '.join(masked)})" if masked else "")
    text = [
        f"Claim: sharper minima are more vulnerable, i.e. sharpness correlates negatively "
        f"with {_header(key)} accuracy. Spearman over {over}, α = {alpha:g}: "
        f"{numbers(main)}: {_call(main, key, alpha)}."
    ]
    if masked:
        text.append(f"Over all {groups[0].n}: {numbers(groups[0])}.")
    for g in groups[1 + bool(masked) :]:
        text.append(
            f"Within the subset {g.label!r} ({', '.join(g.methods)}; {g.n} models): "
            f"{numbers(g)}: {_call(g, key, alpha)}."
        )
    if means:
        best = max(means, key=lambda m: means[m][key][0])
        text.append(f"Most robust at {_header(key)}: {best} ({means[best][key][0]:.3f}).")
    for m, (k, raw, soft) in masked.items():
        at_key = (
            f"; at {_header(key)} {means[m][key][0]:.3f} vs {means[m][key + '/T'][0]:.3f}"
            if key + "/T" in means[m]
            else ""
        )
        text.append(
            f"{m} shows gradient masking: {_header(k)} accuracy {raw:.3f} at T = 1 but {soft:.3f} "
            f"when the same PGD attacks logits / T{at_key}. PGD with a random start at T = 1 "
            "does not see through the saturated softmax, so its robust accuracy, and its "
            "sharpness at T = 1 (set by the logit scale), are not comparable with the others'."
        )
    text.append(
        "Correlation across methods is not causation: the methods differ in more than "
        "sharpness, and Hessian-based sharpness depends on the weight and logit scale."
    )
    return " ".join(text)


def plot_scatter(
    cfg: ClassifierStudyConfig, rows: list[dict], groups: list[Group], masked: dict, path: Path
) -> Path:
    """Sharpness (lambda_max, trace, worst-case) versus the target robust accuracy, one point
    per run; gradient-masked methods drawn hollow; each panel's title gives every group's rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, names = target_key(cfg), sharpness_labels(cfg)
    flat = [flat_row(r) for r in rows]
    methods = list(dict.fromkeys(r["method"] for r in flat))
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    fig, axes = plt.subplots(
        1, len(CORRELATED), figsize=(4.4 * len(CORRELATED) + 2, 3.8 + 0.25 * len(groups))
    )
    for ax, s in zip(axes, CORRELATED, strict=True):
        for i, m in enumerate(methods):
            pts = [(r[s], r[key]) for r in flat if r["method"] == m]
            color = cmap(i % cmap.N)
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="os^Dv<>p*h"[i % 10],
                s=28,
                label=m + (" (masked)" if m in masked else ""),
                facecolors="none" if m in masked else color,
                edgecolors=color,
            )
        if all(r[s] > 0 for r in flat):
            ax.set_xscale("log")
        ax.set_xlabel(names[s])
        ax.set_ylabel(f"{_header(key)} accuracy")
        ax.set_title(
            "\n".join(f"{g.label}: {_fmt_corr(g.corr[s][key])}" for g in groups), fontsize=8
        )
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"{cfg.name}: sharpness vs robust accuracy (one point per trained model)")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


def _csv_text(rows: list[dict]) -> str:
    flat = [flat_row(r) for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def _corr_table(cfg: ClassifierStudyConfig, groups: list[Group]) -> str:
    """Markdown: one row per sharpness measure, (rho, p, n) per group of models."""
    key, names = target_key(cfg), sharpness_labels(cfg)

    def cells(c: dict) -> str:
        return ("– | –" if c["rho"] is None else f"{c['rho']:+.3f} | {c['p']:.3g}") + f" | {c['n']}"

    head = "| sharpness | " + " | ".join(f"ρ ({g.label}) | p | n" for g in groups) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(groups)]
    for s in SHARPNESS_KEYS:
        lines.append(f"| {names[s]} | " + " | ".join(cells(g.corr[s][key]) for g in groups) + " |")
    return "\n".join(lines)


def write_outputs(
    cfg: ClassifierStudyConfig, rows: list[dict], failed: dict[str, str], out_dir: Path
) -> dict[str, Any]:
    """Write results.json, results.csv, table.md and scatter.png; return the summary."""
    means = method_means(cfg, rows)
    masked = masked_methods(cfg, means)
    groups = correlation_groups(cfg, rows, masked)
    table = table_markdown(cfg, means)
    text = verdict(cfg, groups, means, masked) if rows else "No finished runs."
    key = target_key(cfg)
    md = (
        f"# {cfg.name}\n\nmean ± std over seeds {cfg.seeds}\n\n{table}\n\n"
        f"## Sharpness vs {_header(key)} accuracy (Spearman, one point per trained model)\n\n"
        f"{_corr_table(cfg, groups)}\n\n{text}\n"
    )
    if failed:
        md += "\nFailed runs: " + "; ".join(f"{k}: {v}" for k, v in failed.items()) + "\n"
    write_text_atomic(out_dir / "table.md", md)
    write_text_atomic(out_dir / "results.csv", _csv_text(rows))
    scatter = plot_scatter(cfg, rows, groups, masked, out_dir / "scatter.png") if rows else None
    summary = {
        "name": cfg.name,
        "target": key,
        "table_markdown": table,
        "verdict": text,
        "correlations": {g.label: {"methods": g.methods, "n": g.n, **g.corr} for g in groups},
        "masked_methods": {
            m: {"column": k, "accuracy": raw, "accuracy_logits_over_T": soft}
            for m, (k, raw, soft) in masked.items()
        },
        "means": means,
        "failed": failed,
        "n_runs": len(rows),
        "compute_seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    write_json_atomic(
        out_dir / "results.json", jsonable({**summary, "config": cfg.model_dump(), "runs": rows})
    )
    summary["scatter"] = str(scatter) if scatter else None
    return summary
