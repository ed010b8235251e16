"""Packaging that tells the truth: the torch floor diffusers needs, no cap below current torch,
optional features as extras with a one-line hint, and a start-up check of the torch/diffusers
pair."""

import re
from pathlib import Path

import pytest
import tomllib

from flatgen.errors import InputError
from flatgen.optional import EXTRAS, MissingExtra, check_versions, require, version_problem

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(reqs):
    return {re.match(r"[A-Za-z0-9_.\-]+", r)[0].lower().replace("-", "_") for r in reqs}


def test_torch_floor_and_no_cap():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    assert torch == ["torch>=2.6"]  # a floor diffusers >= 0.42 runs on, and no upper cap


def test_optional_features_are_extras_and_dev_installs_them():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert set(modules) <= _names(extras[extra]), extra  # require()'s table is pyproject's
        assert not set(modules) & core, extra  # not required by a plain install
    dev = " ".join(extras["dev"])
    assert "flatgen[tensorboard,slurm,wandb]" in dev and "torchmetrics" in dev


def test_missing_extra_is_one_line_naming_the_extra():
    with pytest.raises(MissingExtra) as err:
        require("flatgen_no_such_package.sub", "slurm", feature="--executor slurm")
    msg = str(err.value)
    assert "pip install 'flatgen[slurm]'" in msg and "--executor slurm" in msg
    assert "\n" not in msg and isinstance(err.value, InputError)  # exit 2
    assert require("json", "fid").dumps([1]) == "[1]"  # present: the module itself


def test_incompatible_torch_diffusers_pair_is_named():
    msg = version_problem("2.4.1", "0.42.1")
    assert "torch 2.4.1" in msg and "diffusers 0.42.1" in msg and "torch>=2.6" in msg
    assert "torch>=2.6" in version_problem("2.5.0+cu121", "0.30.0")
    assert version_problem("2.6.0", "0.42.1") is None
    assert version_problem("2.15.0", "0.45.0") is None  # no cap
    check_versions()  # the versions this test runs with pass
