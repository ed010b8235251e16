"""What the benchmark scripts share: the machine and load lines of their reports, the --threads
option, and finding a finished training run to reuse.

Not part of flatgen. The scripts run as files (`.venv/bin/python benchmarks/x.py`), and Python
puts a script's own folder first on sys.path, so `from _common import ...` finds this module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

from flatgen.config import Config, ConfigError, load_config


def machine() -> str:
    """'<CPU model>, <n> cores': the CPU model from /proc/cpuinfo where it names one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def load() -> str:
    """The 1/5/15-minute load averages, e.g. '1.9/2.0/2.1': timings move with them."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads, default 1; the script passes it to torch.set_num_threads."""
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1: stable on a shared, loaded machine)",
    )


def finished_run(run_dir: Path, cfg: Config) -> dict[str, Any] | None:
    """train_summary.json of the run in run_dir if it finished all its steps (not interrupted)
    with a config that resolves to cfg, else None.

    The sweeps retrain nothing that such a run already holds: with the same config (seed
    included) training gives the same weights.
    """
    summary, config = run_dir / "train_summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and config.is_file()):
        return None
    try:  # fields added to Config since the run take their defaults
        if load_config(config).model_dump() != cfg.model_dump():
            return None
    except ConfigError:
        return None
    done = json.loads(summary.read_text())
    if done.get("steps") != cfg.train.steps or done.get("interrupted"):
        return None
    return done
