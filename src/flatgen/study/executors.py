"""Running a study's units as jobs: parallel local processes, or Slurm through submitit.

Each job is the command `flatgen study CONFIG --out OUT --only UNIT` (what --plan prints), so a
job does exactly what a unit run by hand does: it skips a finished unit, resumes an interrupted
one, and writes only into its own run directory. `--collect` builds the report afterwards.
Local jobs get one torch thread each (OMP_NUM_THREADS=1), so N of them share N cores; each
runs in its own session, so a Ctrl-C reaches the parent only, which forwards one SIGINT to each
job (a training unit then saves a checkpoint and exits, as on a plain Ctrl-C) and kills what is
still running after a grace period. A Slurm job runs in the compute node's own environment
(SLURM_*, CUDA_VISIBLE_DEVICES, what the `setup:` lines set), with only flatgen's variables
(OMP_NUM_THREADS, MKL_NUM_THREADS, FLATGEN_*) carried over from the submitting shell; with
gpus_per_run > 1 it starts one process per GPU through torchrun (torch.distributed.run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from flatgen.config import Section
from flatgen.errors import InputError
from flatgen.optional import require

EXECUTORS = ("inline", "local", "slurm")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FLATGEN_PREFIX = "FLATGEN_"  # flatgen's own variables (FLATGEN_DEBUG, ...): they travel to jobs
GRACE_S = 60.0  # after a Ctrl-C, how long a job may take to save and exit before it is killed


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
            "--executor", "inline", "--out", str(Path(out).resolve()), "--only", unit,
            "--no-progress"]


def flatgen_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of `environ` that are flatgen's own: the thread counts and FLATGEN_*."""
    return {k: v for k, v in environ.items() if k in ONE_THREAD or k.startswith(FLATGEN_PREFIX)}


def job_command(config: Path, out: Path, unit: str, *, gpus: int = 1,
                environ: Mapping[str, str] | None = None) -> list[str]:
    """The command of one Slurm job: `env` sets flatgen's variables on top of the node's own
    environment (which the job inherits: submitit's CommandFunction gets env=None), and
    gpus > 1 launches one process per GPU with torchrun on the job's single node."""
    command = unit_command(config, out, unit)
    if gpus > 1:  # torchrun --standalone --nproc_per_node N -m flatgen.cli study ...
        command = [command[0], "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(gpus), *command[1:]]
    assignments = [f"{k}={v}" for k, v in sorted(flatgen_env(
        os.environ if environ is None else environ).items())]
    return ["env", *assignments, *command] if assignments else command


def make_executor(kind: str, folder: Path, slurm: SlurmSettings | None = None):
    """A submitit executor writing its logs under folder (OUT/submitit)."""
    submitit = require("submitit", "slurm", feature="--executor slurm")

    if kind == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=str(folder))
        except RuntimeError as err:  # no srun: not on a Slurm cluster
            raise ValueError(f"--executor slurm: {err}") from None
        executor.update_parameters(**slurm_parameters(slurm or SlurmSettings(), "flatgen"))
        return executor
    check_executor(kind)
    raise ValueError(f"--executor {kind} runs without submitit: only slurm makes an executor")


def check_executor(kind: str | None) -> None:
    """InputError (one line) unless kind is None (the default) or one of EXECUTORS."""
    if kind is not None and kind not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")


def submit_units(
    executor: Any,
    *,
    config: Path,
    out: Path,
    units: Sequence[str],
    gpus: int = 1,
) -> dict[str, Any]:
    """Submit one job per unit; returns unit name -> submitit job. The job's environment is
    the node's (env=None), never this shell's: job_command adds flatgen's variables."""
    submitit = require("submitit", "slurm", feature="--executor slurm")
    CommandFunction = require("submitit.helpers", "slurm").CommandFunction  # noqa: N806

    jobs = {}
    for unit in units:
        if isinstance(executor, submitit.SlurmExecutor):  # squeue then names the unit
            executor.update_parameters(job_name=f"flatgen-{unit}")
        command = job_command(config, out, unit, gpus=gpus)
        jobs[unit] = executor.submit(CommandFunction(command, verbose=False, env=None))
    return jobs


def run_local(
    config: Path, out: Path, units: Sequence[str], *, parallel: int,
    on_done: Callable[[str, str, float], None] | None = None, grace_s: float = GRACE_S,
) -> dict[str, str]:
    """Run the units as parallel local processes (one torch thread each), `parallel` at a time,
    in the order given; returns unit name -> 'done' or 'failed: ...'. on_done(unit, state,
    seconds) hears each unit as it ends. Plain subprocesses, not submitit's local executor:
    that one hands results back as pickles, and flatgen unpickles nothing. Each job's output
    goes to OUT/logs/<unit>.log. On KeyboardInterrupt (or any error here) the running jobs
    get one SIGINT each, then SIGKILL after grace_s, before it propagates."""
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | ONE_THREAD
    status: dict[str, str] = {}
    waiting = list(units)
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                unit = waiting.pop(0)
                log = open(logs / f"{unit}.log", "w")  # noqa: SIM115 - closed when the job ends
                proc = subprocess.Popen(unit_command(config, out, unit), env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                running[unit] = (proc, log, time.perf_counter())
            for unit, (proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[unit]
                status[unit] = _job_state(logs / f"{unit}.log", proc.returncode)
                if on_done is not None:
                    on_done(unit, status[unit], time.perf_counter() - t0)
            if running:
                time.sleep(0.5)
    except BaseException:
        _stop([proc for proc, _, _ in running.values()], grace_s)
        raise
    finally:
        for _, log, _ in running.values():
            log.close()
    return status


def _job_state(log: Path, returncode: int) -> str:
    if returncode == 0:
        return "done"
    lines = log.read_text(errors="replace").strip().splitlines()
    return f"failed: {lines[-1] if lines else f'exit {returncode}'} (log: {log})"


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    """One SIGINT each (a training job saves and exits), then SIGKILL whatever outlives grace_s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    try:
        for proc in procs:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: kill at once
        pass
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def submit_slurm(config: Path, out: Path, units: Sequence[str], *,
                 settings: SlurmSettings | None) -> dict[str, str]:
    """Submit one Slurm job per unit and return unit name -> job id, without waiting."""
    executor = make_executor("slurm", Path(out) / "submitit", settings)
    gpus = (settings or SlurmSettings()).gpus_per_run
    jobs = submit_units(executor, config=config, out=out, units=units, gpus=gpus)
    return {unit: str(job.job_id) for unit, job in jobs.items()}
