"""Studies through submitit: the local executor end to end, and the Slurm job script that
submitit would submit, rendered without a cluster."""

import json
import sys

import pytest
import submitit
import yaml
from typer.testing import CliRunner

from flatgen.cli import app
from flatgen.study import load_study_config
from flatgen.study.executors import SlurmSettings, slurm_parameters, unit_command

runner = CliRunner()

TINY_STUDY = {
    "name": "tiny",
    "base": {"data": {"name": "toy2d", "n_train": 128, "n_test": 32}, "model": {"preset": "mlp2d"},
             "train": {"steps": 3, "batch_size": 16, "warmup_steps": 0, "log_every": 1}},
    "methods": ["adm", "sam"],
    "seeds": [0],
    "evaluations": {"quality_steps": [2], "n_samples": 16, "sharpness": False, "suites": []},
    "slurm": {"partition": "gpu", "gpus_per_run": 2, "cpus_per_run": 6, "time_min": 90,
              "mem_gb": 32, "account": "lab", "setup": ["module load cuda"],
              "additional": {"reservation": "paper"}},
}


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY))
    return path


def test_local_executor_runs_every_unit_in_its_own_process(study_file, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["study", str(study_file), "--out", str(out), "--executor", "local",
                                 "--jobs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    for unit in ("adm-s0", "sam-s0"):
        saved = json.loads((out / "runs" / unit / "eval" / f"study_{unit[:-3]}.json").read_text())
        assert saved["metrics"]["w2@T2"] > 0
        assert (out / "runs" / unit / "train_summary.json").is_file()
    # each job ran as its own process and logged into OUT/logs; no pickle was written
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["adm-s0.log", "sam-s0.log"]
    assert not list(out.rglob("*.pkl"))
    assert (out / "report.html").is_file()
    # a second call finds every unit done and submits nothing
    again = runner.invoke(app, ["study", str(study_file), "--out", str(out), "--executor", "local",
                                "--no-progress"])
    assert again.exit_code == 0 and "running 0 unit(s)" in again.output


def test_local_job_gets_one_torch_thread(tmp_path, monkeypatch):
    from flatgen.study import executors

    monkeypatch.setattr(executors, "unit_command", lambda config, out, unit: [
        sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"])
    status = executors.run_local(tmp_path / "c.yaml", tmp_path, ["u0", "u1", "u2"], parallel=2)
    assert status == {"u0": "done", "u1": "done", "u2": "done"}
    assert (tmp_path / "logs" / "u2.log").read_text().strip() == "1"
def test_slurm_job_script_without_a_cluster(study_file, tmp_path, monkeypatch):
    """The sbatch file submitit writes for one unit, built by its own SlurmExecutor."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    study = load_study_config(study_file)
    executor = submitit.SlurmExecutor(folder=str(tmp_path / "submitit"))
    executor.update_parameters(**slurm_parameters(study.slurm, "flatgen-sam-s0"))
    script = executor._make_submission_file_text("CMD", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --time=90", "#SBATCH --mem=32GB",
                 "#SBATCH --account=lab", "#SBATCH --job-name=flatgen-sam-s0",
                 "#SBATCH --reservation=paper", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in script, line
    assert "module load cuda" in script
    command = unit_command(study_file, tmp_path / "out", "sam-s0")
    assert command[-5:] == ["--out", str((tmp_path / "out").resolve()), "--only", "sam-s0",
                            "--no-progress"]


def test_slurm_submission_one_job_per_unit(study_file, tmp_path, monkeypatch):
    """What `--executor slurm` hands sbatch (a stand-in on PATH): one job script per unit."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    bin_dir, seen = tmp_path / "bin", tmp_path / "sbatch-seen"
    bin_dir.mkdir()
    seen.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\n"
                      f"n=$(ls {seen} | wc -l); cp \"$1\" {seen}/job$n.sh\n"
                      "echo \"Submitted batch job $((101 + n))\"\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    out = tmp_path / "out"
    result = runner.invoke(app, ["study", str(study_file), "--out", str(out),
                                 "--executor", "slurm"])
    assert result.exit_code == 0, result.output
    assert "adm-s0: Slurm job 101" in result.output and "sam-s0: Slurm job 102" in result.output
    assert "--collect" in result.output
    scripts = [(seen / f"job{i}.sh").read_text() for i in range(2)]
    assert "--job-name=flatgen-adm-s0" in scripts[0] and "--job-name=flatgen-sam-s0" in scripts[1]
    assert all("#SBATCH --partition=gpu" in text for text in scripts)
    assert not (out / "runs").exists()  # nothing ran here: the jobs run on the cluster


def test_slurm_settings_are_typed():
    with pytest.raises(ValueError):
        SlurmSettings(gpus_per_run=-1)
    with pytest.raises(ValueError):
        SlurmSettings(partiton="gpu")  # a typo is an error, not a silent default
    assert "gpus_per_node" not in slurm_parameters(SlurmSettings(gpus_per_run=0), "x")


def test_slurm_off_a_cluster_is_one_line(study_file, tmp_path):
    result = runner.invoke(app, ["study", str(study_file), "--out", str(tmp_path / "o"),
                                 "--executor", "slurm"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "slurm" in result.output.lower()
    assert not (tmp_path / "o").exists()  # a refused input writes nothing


class _Capture:
    """A stand-in submitit executor: keeps what would be pickled for the node."""

    def __init__(self):
        self.functions = []

    def submit(self, fn):
        self.functions.append(fn)
        return type("Job", (), {"job_id": str(100 + len(self.functions))})()


def test_slurm_job_runs_in_the_node_environment(tmp_path, monkeypatch):
    """The login shell's environment stays behind but for flatgen's own variables; the job
    sees the node's SLURM_* and CUDA_VISIBLE_DEVICES (submitit's command, run here)."""
    from flatgen.study import executors

    monkeypatch.setattr(executors, "unit_command", lambda config, out, unit: [
        sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"])
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("FLATGEN_DEBUG", "1")
    monkeypatch.setenv("LOGIN_ONLY", "login node")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    capture = _Capture()
    executors.submit_units(capture, config=tmp_path / "c.yaml", out=tmp_path, units=["adm-s0"])
    (fn,) = capture.functions
    assert fn.env is None  # nothing replaces the node's environment
    # now "on the node": its own variables, not the login shell's
    monkeypatch.delenv("LOGIN_ONLY")
    monkeypatch.delenv("FLATGEN_DEBUG")
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = json.loads(fn())
    assert seen["SLURM_JOB_ID"] == "4242" and seen["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert seen["OMP_NUM_THREADS"] == "3" and seen["FLATGEN_DEBUG"] == "1"  # flatgen's, merged
    assert "LOGIN_ONLY" not in seen


def test_slurm_job_with_two_gpus_starts_two_processes(tmp_path, monkeypatch):
    """gpus_per_run: 2 -> torchrun --nproc_per_node 2 in the job's command: two ranks start."""
    from submitit.helpers import CommandFunction

    from flatgen.study import executors

    command = executors.job_command(tmp_path / "c.yaml", tmp_path / "o", "sam-s0", gpus=2,
                                    environ={})
    assert command[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            "2", "-m"]
    assert command[7:9] == ["flatgen.cli", "study"] and command[-2:] == ["sam-s0", "--no-progress"]
    assert "torch.distributed.run" not in executors.job_command(
        tmp_path / "c.yaml", tmp_path / "o", "sam-s0", gpus=1, environ={})
    # run the launcher for real on a stand-in worker: each rank writes its RANK and WORLD_SIZE
    worker = tmp_path / "worker.py"
    worker.write_text("import os, pathlib\n"
                      f"pathlib.Path({str(tmp_path)!r}, 'rank' + os.environ['RANK']).write_text("
                      "os.environ['WORLD_SIZE'])\n")
    monkeypatch.setattr(executors, "unit_command",
                        lambda config, out, unit: [sys.executable, str(worker)])
    launch = executors.job_command(tmp_path / "c.yaml", tmp_path / "o", "u", gpus=2, environ={})
    CommandFunction(launch, verbose=False, env=None)()
    assert sorted(p.name for p in tmp_path.glob("rank*")) == ["rank0", "rank1"]
    assert (tmp_path / "rank1").read_text() == "2"
