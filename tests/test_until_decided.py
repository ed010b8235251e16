"""`--until-decided`: seeds are added in batches until every primary claim is decided, with the
look's nominal level of the group-sequential design, and every look is recorded."""

import json

import pytest
from rich.console import Console

from flatgen.report.sequential import SequentialDesign
from flatgen.study import sequential
from flatgen.study.config import StudyConfig

QUIET = Console(quiet=True)


def study(batch=2, max_seeds=6):
    return StudyConfig.model_validate({
        "methods": ["adm", "sam"], "seeds": [0],
        "verdicts": {"sequential": {"batch": batch, "max_seeds": max_seeds}}})


def fake_looks(monkeypatch, verdicts_by_n):
    """judge_look returns the planted verdicts for each number of seeds; records the alphas."""
    seen = []

    def judge(current, out, *, alpha):
        seen.append((len(current.seeds), alpha))
        return verdicts_by_n[len(current.seeds)]

    monkeypatch.setattr(sequential, "judge_look", judge)
    return seen


def test_stops_when_every_primary_claim_is_decided(tmp_path, monkeypatch):
    plan = {2: {"a": "inconclusive at n=2", "b": "reproduced"},
            4: {"a": "excluded at the source's size", "b": "reproduced"},
            6: {"a": "reproduced", "b": "reproduced"}}
    seen = fake_looks(monkeypatch, plan)
    ran = []
    out = sequential.run_until_decided(study(), tmp_path, console=QUIET,
                                       run_seeds=lambda s: ran.append(list(s.seeds)))
    assert ran == [[0, 1], [0, 1, 2, 3]]  # the third batch never ran
    design = SequentialDesign.planned(batch=2, max_seeds=6)
    assert [a for _, a in seen] == pytest.approx(list(design.nominal[:2]))
    assert seen[0][1] < seen[1][1] < 0.05  # early looks spend little alpha
    assert out.decided["b"].look == 1 and out.decided["a"].look == 2
    assert out.decided["a"].verdict == "excluded at the source's size"  # frozen at its look
    assert out.stopped == "every primary claim decided" and out.pending == []
    saved = json.loads((tmp_path / "sequential.json").read_text())
    assert saved["decided"]["a"]["n_seeds"] == 4 and len(saved["looks"]) == 2


def test_stops_at_the_planned_maximum_with_claims_pending(tmp_path, monkeypatch):
    plan = {n: {"a": f"inconclusive at n={n}"} for n in (2, 4, 6)}
    fake_looks(monkeypatch, plan)
    out = sequential.run_until_decided(study(), tmp_path, console=QUIET, run_seeds=lambda s: None)
    assert out.pending == ["a"] and out.stopped == "the planned maximum of 6 seeds"
    assert out.study.seeds == [0, 1, 2, 3, 4, 5]


def test_the_budget_stops_before_a_batch_that_would_not_fit(tmp_path, monkeypatch):
    plan = {n: {"a": f"inconclusive at n={n}"} for n in (2, 4, 6)}
    fake_looks(monkeypatch, plan)
    clock = iter(range(0, 10_000, 100))  # every call of perf_counter moves 100 s on
    monkeypatch.setattr(sequential.time, "perf_counter", lambda: next(clock))
    out = sequential.run_until_decided(study(), tmp_path, console=QUIET, budget_s=250,
                                       run_seeds=lambda s: None)
    assert out.study.seeds == [0, 1] and out.stopped.startswith("budget")


@pytest.mark.parametrize("args, message", [
    (["--max-seeds", "5"], "--max-seeds and --budget go with --until-decided"),
    (["--until-decided", "--plan"], "--plan lists the config's seeds"),
    (["--until-decided", "--executor", "slurm"], "--until-decided judges each batch"),
])
def test_the_sequential_options_refuse_what_they_cannot_do(tmp_path, args, message):
    from typer.testing import CliRunner

    from flatgen.cli import app

    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["study", "configs/digits-study.yaml", "--out", str(out),
                                      *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_the_decision_text_names_the_look_only_where_there_are_several():
    from flatgen.study.sequential import Decision

    assert Decision("reproduced", 1, 1, 5).text() == ""
    assert Decision("reproduced", 1, 2, 5).text() == "decided at look 1 of 2, n=5"
