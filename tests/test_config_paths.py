"""Paths in a config file are read from the file's own folder, whatever the working directory."""

from __future__ import annotations

import numpy as np
import yaml

from flatgen.config import load_config
from flatgen.io import RUN_MARKER, resolve_config_paths
from flatgen.study.config import load_study_config
from tests.test_data import _write_cifar_batch


def _cifar(root):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(1, 6):
        _write_cifar_batch(root / f"data_batch_{i}.bin", [i, i], rng)
    _write_cifar_batch(root / "test_batch.bin", [0, 1], rng)


def test_data_path_is_read_from_the_config_files_folder(tmp_path, monkeypatch):
    _cifar(tmp_path / "project" / "data" / "cifar")
    config = tmp_path / "project" / "configs" / "c.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"data": {"name": "cifar10", "path": "../data/cifar"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config)
    assert cfg.data.path == str(tmp_path / "project" / "data" / "cifar")
    # the study's base config too, from the study file's folder
    study = tmp_path / "project" / "configs" / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "methods": ["adm"], "base": {
        "data": {"name": "cifar10", "path": "../data/cifar"},
        "train": {"steps": 1, "batch_size": 2, "warmup_steps": 0}},
        "evaluations": {"suites": [], "sharpness": False}}))
    assert load_study_config(study).base["data"]["path"] == cfg.data.path


def test_absolute_paths_and_a_runs_own_config_are_kept(tmp_path):
    data = {"data": {"name": "cifar10", "path": "/abs/cifar"}, "model": {"pretrained": "m"}}
    out = resolve_config_paths(data, tmp_path / "c.yaml")
    assert out["data"]["path"] == "/abs/cifar" and out["model"]["pretrained"] == str(tmp_path / "m")
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_MARKER).touch()
    kept = resolve_config_paths({"data": {"path": "rel"}}, run / "config.yaml")
    assert kept["data"]["path"] == "rel"
