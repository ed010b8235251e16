"""Running a study's units as jobs: parallel local processes, or Slurm through submitit.

Each job is the command `flatgen study CONFIG --out OUT --only UNIT` (what --plan prints), so a
job does exactly what a unit run by hand does: it skips a finished unit, resumes an interrupted
one, and writes only into its own run directory. `--collect` builds the report afterwards.
Local jobs get one torch thread each (OMP_NUM_THREADS=1), so N of them share N cores.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from flatgen.config import Section

EXECUTORS = ("inline", "local", "slurm")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class SlurmSettings(Section):
    """The `slurm:` section of a study config: what each (method, seed) job asks Slurm for."""

    partition: str | None = None
    gpus_per_run: int = Field(1, ge=0)
    cpus_per_run: int = Field(8, ge=1)
    time_min: int = Field(24 * 60, ge=1)  # wall-time limit of one job
    mem_gb: int | None = Field(None, gt=0)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = Field(default_factory=list)  # shell lines first (module load, activate)
    additional: dict[str, Any] = Field(default_factory=dict)  # any other #SBATCH option
    max_parallel: int = Field(256, ge=1)  # jobs of the array running at once


def slurm_parameters(settings: SlurmSettings, job_name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (Slurm's own names) for one unit's job."""
    params: dict[str, Any] = {
        "job_name": job_name, "time": settings.time_min, "nodes": 1, "ntasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_run, "array_parallelism": settings.max_parallel,
    }
    if settings.gpus_per_run:
        params["gpus_per_node"] = settings.gpus_per_run
    optional = {"partition": settings.partition, "account": settings.account,
                "qos": settings.qos, "constraint": settings.constraint,
                "mem": f"{settings.mem_gb}GB" if settings.mem_gb else None}
    params |= {k: v for k, v in optional.items() if v is not None}
    if settings.setup:
        params["setup"] = list(settings.setup)
    if settings.additional:
        params["additional_parameters"] = dict(settings.additional)
    return params


def unit_command(config: Path, out: Path, unit: str) -> list[str]:
    """The command one job runs (absolute paths: a job may start in another directory)."""
    return [sys.executable, "-m", "flatgen.cli", "study", str(Path(config).resolve()),
            "--out", str(Path(out).resolve()), "--only", unit, "--no-progress"]


def make_executor(kind: str, folder: Path, slurm: SlurmSettings | None = None):
    """A submitit executor writing its logs under folder (OUT/submitit)."""
    import submitit

    if kind == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=str(folder))
        except RuntimeError as err:  # no srun: not on a Slurm cluster
            raise ValueError(f"--executor slurm: {err}") from None
        executor.update_parameters(**slurm_parameters(slurm or SlurmSettings(), "flatgen"))
        return executor
    raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")


def submit_units(
    executor: Any,
    *,
    config: Path,
    out: Path,
    units: Sequence[str],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Submit one job per unit; returns unit name -> submitit job."""
    import submitit
    from submitit.helpers import CommandFunction

    full_env = dict(os.environ) | (env or {})
    jobs = {}
    for unit in units:
        if isinstance(executor, submitit.SlurmExecutor):  # squeue then names the unit
            executor.update_parameters(job_name=f"flatgen-{unit}")
        jobs[unit] = executor.submit(CommandFunction(unit_command(config, out, unit), verbose=False,
                                                     env=full_env))
    return jobs


def run_local(config: Path, out: Path, units: Sequence[str], *, parallel: int) -> dict[str, str]:
    """Run the units as parallel local processes (one torch thread each), `parallel` at a time;
    returns unit name -> 'done' or 'failed: ...'. Plain subprocesses, not submitit's local
    executor: that one hands results back as pickles, and flatgen unpickles nothing. Each job's
    output goes to OUT/logs/<unit>.log."""
    import subprocess

    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | ONE_THREAD
    status: dict[str, str] = {}
    waiting = list(units)
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    while waiting or running:
        while waiting and len(running) < parallel:
            unit = waiting.pop(0)
            log = open(logs / f"{unit}.log", "w")  # noqa: SIM115 - closed when the job ends
            running[unit] = (subprocess.Popen(unit_command(config, out, unit), env=env,
                                              stdout=log, stderr=subprocess.STDOUT), log)
        for unit, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[unit]
            lines = (logs / f"{unit}.log").read_text().strip().splitlines()
            status[unit] = "done" if proc.returncode == 0 else (
                f"failed: {lines[-1] if lines else f'exit {proc.returncode}'} "
                f"(log: {logs / f'{unit}.log'})")
        if running:
            time.sleep(0.5)
    return status


def submit_slurm(config: Path, out: Path, units: Sequence[str], *,
                 settings: SlurmSettings | None) -> dict[str, str]:
    """Submit one Slurm job per unit and return unit name -> job id, without waiting."""
    executor = make_executor("slurm", Path(out) / "submitit", settings)
    jobs = submit_units(executor, config=config, out=out, units=units)
    return {unit: str(job.job_id) for unit, job in jobs.items()}
