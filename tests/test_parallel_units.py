"""Units run as parallel one-thread processes give the numbers of a one-process run, say how
each ended as it ends, and stop with the parent on Ctrl-C."""

import json
import os
import sys
import time

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from flatgen.cli import app
from flatgen.study import load_study_config, plan_units
from flatgen.study.kinds import kind_of
from flatgen.study.run import run_units, snapshot_config

runner = CliRunner()
# one torch thread in this process, as each local job runs (CI runs at the default two)
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "tiny",
    "base": {"data": {"name": "toy2d", "n_train": 128, "n_test": 32},
             "model": {"preset": "mlp2d"},
             "train": {"steps": 4, "batch_size": 16, "warmup_steps": 1}},
    "methods": ["adm", "sam", "sam+ema"],
    "seeds": [0],
    "evaluations": {
        "quality_steps": [2, 4], "n_samples": 16, "sharpness_batch": 16, "trace_matvecs": 3,
        "perturbation_rhos": [0.05], "perturbation_sigmas": [0.05], "perturbation_draws": 1,
        "suites": ["quant", "noise"],
        "robustness": {"n_samples": 16, "bits": [8, 4], "noise_sigmas": [0.05],
                       "noise_draws": 1, "eval_steps": 2},
    },
}


TIMINGS = ("seconds", "timing_s")  # wall-clock fields: the only ones a run may change


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: None if k in TIMINGS else _untimed(v) for k, v in obj.items()}
    return [_untimed(v) for v in obj] if isinstance(obj, list) else obj


def _results(out):
    """Every result file as text, its wall-clock fields blanked, keyed by path below out."""
    found = {}
    for path in sorted((out / "runs").rglob("study_*.json")):
        found[str(path.relative_to(out))] = json.dumps(_untimed(json.loads(path.read_text())))
    return found


def test_parallel_units_equal_one_process_bitwise(tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    study = load_study_config(config)
    inline, local = tmp_path / "inline", tmp_path / "local"
    assert torch.get_num_threads() == 1  # the test runs at one thread, as each local job does
    status = run_units(study, inline, executor="inline", console=Console(quiet=True),
                       progress=False)
    assert set(status.values()) == {"done"}
    result = runner.invoke(app, ["study", str(config), "--out", str(local), "--executor",
                                 "local", "--jobs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    one, parallel = _results(inline), _results(local)
    assert sorted(one) == ["runs/adm-s0/eval/study_adm.json", "runs/sam-s0/eval/study_sam+ema.json",
                           "runs/sam-s0/eval/study_sam.json"]
    assert parallel == one  # byte for byte but the timings, ladders and details included
    for name in one:
        a, b = (json.loads((d / name).read_text())["metrics"] for d in (inline, local))
        assert a["lambda_max"] == b["lambda_max"] and a["w2@T4"] == b["w2@T4"]
        assert _untimed(a) == _untimed(b)
    # the trained weights too
    for unit in ("adm-s0", "sam-s0"):
        ckpts = sorted((inline / "runs" / unit).rglob("*.safetensors"))
        assert ckpts
        for path in ckpts:
            assert path.read_bytes() == (local / path.relative_to(inline)).read_bytes()
    # one line per unit as it finished, logs in OUT/logs, one report after all units
    assert "[1/2]" in result.output and "[2/2]" in result.output
    assert sorted(p.name for p in (local / "logs").iterdir()) == ["adm-s0.log", "sam-s0.log"]
    assert (local / "report.html").is_file()
    assert json.loads((local / "status.json").read_text()) == {"adm-s0": "done",
                                                               "sam-s0": "done"}


def test_the_default_runs_units_in_parallel_processes(tmp_path, monkeypatch):
    """No --executor on a CPU machine: local one-thread processes, as many as the cores."""
    from flatgen.study import executors, run

    seen = {}

    def fake_local(config, out, units, *, parallel, on_done=None):
        seen.update(config=config, units=list(units), parallel=parallel)
        return dict.fromkeys(units, "failed: stand-in")

    monkeypatch.setattr(run, "run_local", fake_local)
    monkeypatch.setattr(run, "default_jobs", lambda: 7)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = load_study_config(_write(tmp_path, TINY | {"seeds": [0, 1]}))
    status = run_units(study, tmp_path / "o", console=Console(quiet=True))
    assert seen["parallel"] == 4 and len(seen["units"]) == 4  # min(cores, units)
    assert set(status.values()) == {"failed: stand-in"}
    assert executors.EXECUTORS == ("inline", "local", "slurm")


def _write(tmp_path, data):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_config_snapshot_loads_back_the_same_study(tmp_path):
    """flatgen demo's jobs load OUT/study.yaml: it must be the demo's config, field for field
    (robustness fields left unset stay unset: they default from the run's data)."""
    from flatgen.study.demo import demo_study

    for quick in (False, True):
        study = demo_study(quick, seeds=3)
        path = snapshot_config(study, tmp_path / f"q{quick}")
        again = load_study_config(path)
        assert again.model_dump() == study.model_dump()
        assert (again.evaluations.robustness.model_fields_set
                == study.evaluations.robustness.model_fields_set)
        kind = kind_of(study)
        assert kind.evaluations(again) == kind.evaluations(study)
        for unit in plan_units(study):
            assert kind.run_config(again, unit) == kind.run_config(study, unit)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_stops_every_child(tmp_path, monkeypatch):
    from flatgen.study import executors

    pids = tmp_path / "pids"
    pids.mkdir()
    # each stand-in job records its pid, ignores nothing, and would run for a minute
    monkeypatch.setattr(executors, "unit_command", lambda config, out, unit: [
        sys.executable, "-c",
        f"import os, time; open({str(pids)!r} + '/' + str(os.getpid()), 'w').close(); "
        "time.sleep(60)"])
    real_sleep, calls = time.sleep, []

    def sleep_then_interrupt(seconds):
        calls.append(seconds)
        real_sleep(seconds)
        if len(list(pids.iterdir())) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(executors.time, "sleep", sleep_then_interrupt)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executors.run_local(tmp_path / "c.yaml", tmp_path, ["u0", "u1", "u2"], parallel=2,
                            grace_s=20)
    assert time.monotonic() - t0 < 30  # SIGINT ended them: no wait for the minute
    started = [int(p.name) for p in pids.iterdir()]
    assert len(started) == 2  # the third never started
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (reaped by run_local)
