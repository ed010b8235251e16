"""`flatgen study --until-decided`: add seeds in batches until every primary claim is decided.

After each batch the claims are judged at the look's nominal level of a group-sequential design
(O'Brien-Fleming alpha-spending over the planned looks, flatgen.report.sequential), so looking
again after adding seeds does not inflate the error rate. A claim counts as decided at the first
look where it reads reproduced, contradicted, excluded at the source's size, or untestable here;
the study stops when every primary claim is decided, at the planned maximum of seeds, or when
the next batch would not fit in the budget. sequential.json records every look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from flatgen.io import write_json_atomic
from flatgen.report.claims import evaluate_claims, is_decided
from flatgen.report.sequential import SequentialDesign
from flatgen.report.tables import quality_metric
from flatgen.study.config import StudyConfig
from flatgen.study.run import load_finished


@dataclass
class Decision:
    """A claim's verdict at the look that decided it."""

    verdict: str
    look: int  # 1-based
    n_looks: int
    n_seeds: int

    def text(self) -> str:
        """What the verdict table adds to the verdict; nothing for a one-look design, where
        every verdict is the fixed test's (the report's list of looks says so once)."""
        if self.n_looks == 1:
            return ""
        return f"decided at look {self.look} of {self.n_looks}, n={self.n_seeds}"


@dataclass
class SequentialOutcome:
    study: StudyConfig  # the study with the seeds actually run
    design: SequentialDesign
    decided: dict[str, Decision] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # primary claims still undecided
    looks: list[str] = field(default_factory=list)  # one line per look, for the report
    stopped: str = ""  # why the study stopped


def with_seeds(study: StudyConfig, n: int) -> StudyConfig:
    """The study on its first n seeds (from its first seed on, consecutively)."""
    first = min(study.seeds)
    return study.model_copy(update={"seeds": list(range(first, first + n))})


def judge_look(study: StudyConfig, out: Path, *, alpha: float) -> dict[str, str]:
    """Primary claim id -> verdict at a look's nominal level, on the study's finished rows."""
    rows, _ = load_finished(out, study)
    methods = [m for m in study.methods if any(r["method"] == m for r in rows)]
    claims = evaluate_claims(rows, methods=methods, steps=study.evaluations.quality_steps,
                             metric=quality_metric(rows), verdicts=study.verdicts, alpha=alpha)
    return {c.spec.id: c.verdict for c in claims if c.spec.in_family}


def run_until_decided(
    study: StudyConfig, out: Path, *, run_seeds: Callable[[StudyConfig], None],
    console: Console, max_seeds: int | None = None, budget_s: float | None = None,
) -> SequentialOutcome:
    """Run the study's seeds batch by batch (run_seeds trains and measures a study's units,
    skipping finished ones) and judge after each batch; see the module docstring."""
    seq = study.verdicts.sequential
    n_max = max_seeds or seq.max_seeds
    design = SequentialDesign.planned(batch=seq.batch, max_seeds=n_max,
                                      alpha=study.verdicts.alpha)
    outcome = SequentialOutcome(study, design)
    start, last_batch_s = time.perf_counter(), 0.0
    for k, n in enumerate(design.looks):
        spent = time.perf_counter() - start
        if budget_s is not None and k > 0 and spent + last_batch_s > budget_s:
            outcome.stopped = (f"budget: the next batch (~{last_batch_s / 60:.0f} min) would "
                               f"pass {budget_s / 60:.0f} min")
            break
        current = with_seeds(study, n)
        console.rule(f"look {k + 1} of {len(design.looks)}: seeds 0..{n - 1} "
                     f"(nominal α {design.nominal[k]:.3g})")
        t0 = time.perf_counter()
        run_seeds(current)
        last_batch_s = time.perf_counter() - t0
        verdicts = judge_look(current, out, alpha=design.nominal[k])
        for claim, verdict in verdicts.items():
            if claim not in outcome.decided and is_decided(verdict):
                outcome.decided[claim] = Decision(verdict, k + 1, len(design.looks), n)
        outcome.pending = [c for c in verdicts if c not in outcome.decided]
        outcome.study = current
        outcome.looks.append(
            f"look {k + 1} of {len(design.looks)}, n={n}, nominal α {design.nominal[k]:.3g}: "
            + "; ".join(f"{c}: {v}" for c, v in verdicts.items()))
        _save(out, outcome)
        if not outcome.pending:
            outcome.stopped = "every primary claim decided"
            break
    else:
        outcome.stopped = f"the planned maximum of {n_max} seeds"
    _save(out, outcome)
    return outcome


def _save(out: Path, outcome: SequentialOutcome) -> None:
    write_json_atomic(out / "sequential.json", {
        "looks_planned": list(outcome.design.looks), "nominal_alpha": list(outcome.design.nominal),
        "looks": outcome.looks, "stopped": outcome.stopped, "pending": outcome.pending,
        "decided": {c: {"verdict": d.verdict, "look": d.look, "n_seeds": d.n_seeds}
                    for c, d in outcome.decided.items()},
    })
