"""The study's outputs: mean ± std table, the primary and exploratory Spearman correlations
(one point per method, see classify.analysis), verdict, scatter plot, CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from flatgen.classify.analysis import analyze, robust_keys, target_key
from flatgen.classify.config import ClassifierStudyConfig
from flatgen.classify.evaluate import SHARPNESS_KEYS
from flatgen.io import write_json_atomic, write_text_atomic
from flatgen.robustness.util import jsonable
from flatgen.tabulate import markdown_table, mean_std

NORM_LABEL = {"linf": "L∞", "l2": "L2"}
MASKING_GAP = 0.1  # accuracy drop under the logits / T attack that we call gradient masking


def _label(key: str) -> str:
    """A column's header, also for the clean accuracy."""
    return _header(key) if "@" in key else key


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


def method_means(cfg: ClassifierStudyConfig, rows: list[dict]) -> dict[str, dict[str, list]]:
    """method -> column -> [mean, std, n] over seeds, in config order."""
    flat = [flat_row(r) for r in rows]
    out: dict[str, dict[str, list]] = {}
    for m in (m.label for m in cfg.methods):
        mine = [r for r in flat if r["method"] == m]
        if mine:
            keys = [k for k in mine[0] if k not in ("method", "seed")]
            out[m] = {k: [*mean_std([r[k] for r in mine]), len(mine)] for k in keys}
    return out


def table_markdown(cfg: ClassifierStudyConfig, means: dict[str, dict[str, list]]) -> str:
    """Markdown table: clean and robust accuracy, sharpness (mean ± std over seeds)."""
    keys, sharp = robust_keys(cfg), sharpness_labels(cfg)
    head = ["method", "n", "clean", *map(_header, keys), *sharp.values()]
    body = []
    for method, cols in means.items():
        cells = [method, str(cols["clean"][2])]
        cells += [f"{cols[k][0]:.3f} ± {cols[k][1]:.3f}" for k in ("clean", *keys)]
        cells += [f"{cols[k][0]:.3g} ± {cols[k][1]:.2g}" for k in sharp]
        body.append(cells)
    return markdown_table(head, body).rstrip("\n")


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


def _fmt_corr(c: dict, p_key: str = "p") -> str:
    if c["rho"] is None:
        return "undefined"
    return f"ρ = {c['rho']:+.2f} ({'Holm ' if p_key == 'p_holm' else ''}p = {c[p_key]:.2g})"


def _primary_call(primary: dict) -> str:
    if primary["rho"] is None:
        return "untestable (the correlation is undefined: fewer than 3 methods or a constant)"
    if not primary["significant"]:
        floor = primary["min_attainable_p"]
        why = (
            f"; with {primary['n']} methods no exact p can be below {floor:.2g}"
            if floor is not None and floor >= primary["alpha"]
            else ""
        )
        return f"the link does not show (not significant at α = {primary['alpha']:g}{why})"
    if primary["rho"] < 0:
        return "the link shows (significantly negative)"
    return "the link is reversed (significantly positive: the sharper methods were more robust)"


def verdict(cfg: ClassifierStudyConfig, result: dict, *, means: dict, masked: dict) -> str:
    """One paragraph: the primary test decides; exploratory results and caveats follow."""
    prim, names = result["primary"], sharpness_labels(cfg)
    key = prim["accuracy"]
    text = [
        f"Claim: sharper minima are more vulnerable, i.e. sharpness correlates negatively with "
        f"{_header(key)} accuracy. Primary test (declared in the config): Spearman of "
        f"{names[prim['sharpness']]} against {_header(key)} accuracy over {prim['n']} methods "
        f"(one point per method, the mean over seeds {cfg.seeds}; {prim['p_method']}): "
        f"{_fmt_corr(prim)}: {_primary_call(prim)}."
    ]
    exp = result["exploratory"]
    if exp["family_size"]:
        hits = "; ".join(
            f"{names[h['sharpness']]} vs {_label(h['accuracy'])}"
            f" ({h['group']}) ρ = {h['rho']:+.2f}, Holm p = {h['p_holm']:.2g}"
            for h in exp["significant"]
        )
        text.append(
            f"Exploratory ({exp['family_size']} other measure x accuracy x group tests, "
            f"Holm-adjusted): " + (hits if hits else "none significant") + "."
        )
    if means:
        best = max(means, key=lambda m: means[m][key][0])
        text.append(f"Most robust at {_header(key)}: {best} ({means[best][key][0]:.3f}).")
    for m, (k, raw, soft) in masked.items():
        text.append(
            f"{m} shows gradient masking: {_header(k)} accuracy {raw:.3f} at T = 1 but {soft:.3f} "
            "when the same PGD attacks logits / T, so its robust accuracy and its sharpness at "
            "T = 1 (set by the logit scale) are not comparable with the others'."
        )
    text.append(
        "Correlation across methods is not causation: the methods differ in more than "
        "sharpness, and Hessian-based sharpness depends on the weight and logit scale."
    )
    return " ".join(text)


def plot_scatter(
    cfg: ClassifierStudyConfig, *, means: dict, result: dict, masked: dict, path: Path
) -> Path:
    """Sharpness versus the primary robust accuracy: one point per method (the mean over seeds)
    with error bars of ± one standard deviation over seeds in both directions; the primary
    measure first; gradient-masked methods hollow; each title gives every group's rho."""
    from flatgen.plotting import pyplot, save_figure

    plt = pyplot()

    key, names = target_key(cfg), sharpness_labels(cfg)
    prim = cfg.correlation.primary.sharpness
    measures = [prim, *(s for s in ("lambda_max", "trace", "worst_case") if s != prim)]
    corr = result["correlations"]
    cmap = plt.get_cmap("tab20" if len(means) > 10 else "tab10")
    fig, axes = plt.subplots(
        1, len(measures), figsize=(4.4 * len(measures) + 2, 3.8 + 0.25 * len(corr))
    )
    for ax, s in zip(axes, measures, strict=True):
        for i, (m, cols) in enumerate(means.items()):
            color = cmap(i % cmap.N)
            ax.errorbar(
                cols[s][0],
                cols[key][0],
                xerr=cols[s][1],
                yerr=cols[key][1],
                fmt="os^Dv<>p*h"[i % 10],
                ms=6,
                color=color,
                mfc="none" if m in masked else color,
                capsize=2,
                label=m + (" (masked)" if m in masked else ""),
            )
        if all(cols[s][0] > 0 for cols in means.values()):
            ax.set_xscale("log")
        ax.set_xlabel(names[s] + (" (primary)" if s == prim else ""))
        ax.set_ylabel(f"{_header(key)} accuracy")
        ax.set_title(
            "\n".join(
                f"{g}: {_fmt_corr(c[s][key], 'p' if c[s][key]['role'] == 'primary' else 'p_holm')}"
                for g, c in corr.items()
            ),
            fontsize=8,
        )
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"{cfg.name}: sharpness vs robust accuracy (one point per method, ± sd)")
    return save_figure(fig, path)


def _csv_text(rows: list[dict]) -> str:
    flat = [flat_row(r) for r in rows]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def _corr_table(cfg: ClassifierStudyConfig, corr: dict) -> str:
    """Markdown: one row per sharpness measure, (rho, p, n) per group, at the primary column;
    p is Holm-adjusted except for the primary test (marked *)."""
    key, names = target_key(cfg), sharpness_labels(cfg)

    def cells(c: dict) -> list[str]:
        if c["rho"] is None:
            return ["–", "–", str(c["n"])]
        star = "*" if c["role"] == "primary" else ""
        p = c["p"] if c["role"] == "primary" else c["p_holm"]
        return [f"{c['rho']:+.3f}{star}", f"{p:.3g}", str(c["n"])]

    head = ["sharpness", *(h for g in corr for h in (f"ρ ({g})", "p", "n"))]
    body = [[names[s], *(cell for c in corr.values() for cell in cells(c[s][key]))]
            for s in SHARPNESS_KEYS]
    return markdown_table(head, body).rstrip("\n")


def write_outputs(
    cfg: ClassifierStudyConfig,
    rows: list[dict],
    *,
    failed: dict[str, str],
    out_dir: Path,
    missing: list[str] | None = None,
) -> dict[str, Any]:
    """Write results.json, results.csv, table.md and scatter.png; return the summary.
    `missing` names the (method, seed) results not found (None: not known)."""
    means = method_means(cfg, rows)
    masked = masked_methods(cfg, means)
    result = analyze(cfg, means)
    table = table_markdown(cfg, means)
    text = verdict(cfg, result, means=means, masked=masked) if rows else "No finished runs."
    key = target_key(cfg)
    md = (
        f"# {cfg.name}\n\nmean ± std over seeds {cfg.seeds}\n\n{table}\n\n"
        f"## Sharpness vs {_header(key)} accuracy (Spearman, one point per method)\n\n"
        "\\* the primary test (its own p); every other p is Holm-adjusted over the "
        f"exploratory family\n\n{_corr_table(cfg, result['correlations'])}\n\n{text}\n"
    )
    if failed:
        md += "\nFailed runs: " + "; ".join(f"{k}: {v}" for k, v in failed.items()) + "\n"
    if missing:
        md += "\nMissing results: " + ", ".join(missing) + "\n"
    write_text_atomic(out_dir / "table.md", md)
    write_text_atomic(out_dir / "results.csv", _csv_text(rows))
    scatter = None
    if rows:
        scatter = plot_scatter(
            cfg, means=means, result=result, masked=masked, path=out_dir / "scatter.png"
        )
    summary = {
        "name": cfg.name,
        "target": key,
        "table_markdown": table,
        "verdict": text,
        "primary": result["primary"],
        "exploratory": result["exploratory"],
        "correlations": result["correlations"],
        "masked_methods": {
            m: {"column": k, "accuracy": raw, "accuracy_logits_over_T": soft}
            for m, (k, raw, soft) in masked.items()
        },
        "means": means,
        "failed": failed,
        "missing": list(missing or []),
        "n_runs": len(rows),
        "compute_seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    write_json_atomic(
        out_dir / "results.json", jsonable({**summary, "config": cfg.model_dump(), "runs": rows})
    )
    summary["scatter"] = str(scatter) if scatter else None
    return summary
