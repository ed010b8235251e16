"""The cost model `flatgen study --plan` prints: its counts against closed forms, the wall time
of jobs on N processes, and --plan itself (an estimate per unit and a total; nothing written)."""

import re

import pytest
import yaml
from typer.testing import CliRunner

from flatgen.cli import app
from flatgen.study.config import StudyConfig, StudyEvaluations
from flatgen.study.plan import (
    BATCH_U,
    GRAD,
    MEASURE_FACTOR,
    estimate_costs,
    measure_forwards,
    wall_time,
)

TINY = {
    "name": "tiny",
    "base": {"data": {"name": "toy2d", "n_train": 128, "n_test": 32},
             "model": {"preset": "mlp2d"},
             "train": {"steps": 10, "batch_size": 16, "warmup_steps": 1}},
    "methods": ["adm", "sam"],
    "seeds": [0, 1],
    "evaluations": {"quality_steps": [2], "n_samples": 16, "sharpness": False,
                    "suites": ["quant"], "robustness": {"bits": [8, 4], "eval_steps": 2}},
}


def test_measure_forwards_closed_form():
    """Quantization at 2 levels x 20 steps on n=128 is 40 U; quality at T'=20 and 100 (not
    given by a steps ladder) 120 U; the selection stream measures the ladder twice."""
    evals = StudyEvaluations.model_validate({
        "quality_steps": [20, 100], "n_samples": 128, "sharpness": False, "suites": ["quant"],
        "robustness": {"bits": [8, 4], "granularity": ["tensor"], "quant_schemes": ["w"],
                       "eval_steps": 20}})
    assert measure_forwards(evals, n=128, selection=False) == 160 * MEASURE_FACTOR
    assert measure_forwards(evals, n=128, selection=True) == 200 * MEASURE_FACTOR
    assert measure_forwards(evals, n=256, selection=False) == 200 * MEASURE_FACTOR
    # a steps ladder that holds the quality T' gives the quality runs: no second count
    with_steps = evals.model_copy(update={"suites": ["steps"]})
    r = with_steps.robustness
    assert measure_forwards(with_steps, n=128, selection=False) == (
        len(r.samplers) * sum(r.steps) * MEASURE_FACTOR)


def test_sam_units_train_at_two_passes():
    costs = estimate_costs(StudyConfig.model_validate(TINY), calibrate_here=False)
    assert list(costs) == ["adm-s0", "sam-s0", "adm-s1", "sam-s1"]
    assert costs["adm-s0"].train_u == 10 * GRAD * 16 / BATCH_U
    assert costs["sam-s0"].train_u == 2 * costs["adm-s0"].train_u
    # adm is a selection method: its quantization ladder (2 bits x 2 granularities x 2 schemes
    # x 2 steps on n=16) is measured a second time
    assert costs["adm-s0"].measure_u == pytest.approx(
        costs["sam-s1"].measure_u + 8 * 2 * 16 / BATCH_U * MEASURE_FACTOR, rel=1e-12)
    assert costs["adm-s0"].total_s == costs["adm-s0"].total_u  # uncalibrated: U as seconds


def test_wall_time_longest_first():
    assert wall_time([3, 3, 2, 2, 2], 1) == 12
    assert wall_time([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2
    assert wall_time([3, 3, 2, 2, 2], 8) == 3
    assert wall_time([], 2) == 0


def test_plan_prints_a_cost_estimate_and_writes_nothing(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(tmp_path / "s"),
                                      "--plan", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    per_unit = re.findall(r"(adm|sam)-s\d: ([\d.]+) s per unit", result.output)
    assert len(per_unit) == 4 and all(float(s) > 0 for _, s in per_unit)
    total = re.search(r"total: ([\d.]+) CPU s; about ([\d.]+) min wall with --jobs 2",
                      result.output)
    assert total and float(total.group(1)) > 0
    assert re.search(r"one U = one forward on a batch of 128 = [\d.]+ ms", result.output)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    # the estimate is shell comments: the rest is the commands, the last one --collect
    commands = [ln for ln in result.output.splitlines() if ln and not ln.startswith("#")]
    assert len(commands) == 5 and commands[-1].endswith("--collect")


def test_more_jobs_than_cores_are_no_faster(monkeypatch):
    """--jobs 4 on 2 cores runs 2 at a time: the plan's wall time is the 2-core one."""
    from flatgen.study.plan import format_costs

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    costs = estimate_costs(StudyConfig.model_validate(TINY), calibrate_here=False)
    two, four = (re.search(r"about ([\d.]+) min wall", format_costs(costs, jobs=j)).group(1)
                 for j in (2, 4))
    assert two == four and "2 cores: 2 at a time" in format_costs(costs, jobs=4)


def test_plan_with_an_unknown_executor_is_refused(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(tmp_path / "s"),
                                      "--plan", "--executor", "foo"])
    assert result.exit_code == 2 and "--executor must be one of inline, local, slurm" in \
        result.output
    assert not (tmp_path / "s").exists()
