"""Datasets, denoiser presets and classifier presets are added through their registries alone."""

import json
import math

import pytest
import torch
from torch import nn

from flatgen.classify.config import DataSpec, ModelSpec
from flatgen.classify.data import load_classifier_data
from flatgen.classify.models import (
    CLASSIFIER_PRESETS,
    ClassifierPreset,
    build_classifier,
    classifier_preset_for,
    register_classifier_preset,
)
from flatgen.config import ConfigError, build_config
from flatgen.data import DATASETS, Dataset, dataset_names, recognize_path, register_dataset
from flatgen.models import MODEL_PRESETS, ModelPreset, TimeMLP, register_model_preset
from flatgen.train import train


def _ring(n: int, seed: int) -> torch.Tensor:
    angle = torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    return torch.stack([angle.cos(), angle.sin()], 1)


def _ring_dataset(calls: list) -> Dataset:
    def load(opts):
        calls.append(opts.n_train)
        return _ring(opts.n_train, 0), _ring(opts.n_test, 1)

    return Dataset(name="ring", load=load, shape=lambda opts: (2,),
                   help="points on the unit circle", options=("n_train", "n_test"))


def _tiny_config(data: dict, model: dict):
    return build_config({
        "data": data, "model": model,
        "train": {"steps": 2, "batch_size": 16, "warmup_steps": 0, "log_every": 1,
                  "ckpt_every": 2},
    })


def test_a_registered_dataset_trains_through_the_config(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'ring'"):
        build_config({"data": {"name": "ring"}, "model": {"preset": "mlp2d"}})
    calls = []
    with DATASETS.temporary("ring", _ring_dataset(calls)) as ring:
        assert register_dataset(ring) is ring  # the same record again is a no-op
        assert "ring" in dataset_names() and "ring" not in dataset_names(labelled=True)
        # the shape check reads the new dataset's shape: a U-Net does not fit 2-D points
        with pytest.raises(ConfigError, match=r"data 'ring' has samples of shape \(2,\)"):
            build_config({"data": {"name": "ring"}})
        cfg = _tiny_config({"name": "ring", "n_train": 64, "n_test": 16}, {"preset": "mlp2d"})
        result = train(cfg, tmp_path / "run", progress=False)
        assert calls == [64]  # the loop loaded the data through the registered loader
        assert result.steps == 2
        steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
        assert steps[-1] == 2 and all(math.isfinite(json.loads(line)["loss"])
                                      for line in (tmp_path / "run" / "metrics.jsonl").open())
        with pytest.raises(ValueError, match="'ring' is already registered"):
            register_dataset(Dataset(name="ring", load=lambda o: None, shape=lambda o: (3,),
                                     help=""))
    assert "ring" not in dataset_names()  # the block took it away again


def test_a_registered_model_preset_is_built_through_the_config(tmp_path):
    narrow = ModelPreset(
        name="mlp-narrow", sample_ndim=1, help="one hidden layer of 8",
        build=lambda shape, dropout: TimeMLP(dim=shape[0], hidden=8, depth=1, emb_dim=4))
    conv = ModelPreset(name="conv-toy", sample_ndim=3, help="",
                       build=lambda shape, dropout: nn.Conv2d(1, 1, 1))
    with MODEL_PRESETS.temporary(narrow.name, narrow), MODEL_PRESETS.temporary(conv.name, conv):
        cfg = _tiny_config({"name": "toy2d", "n_train": 64, "n_test": 16}, {"preset": "mlp-narrow"})
        train(cfg, tmp_path / "run", progress=False)
        from flatgen.train import load_run

        model = load_run(tmp_path / "run").model()
        # [x (2), emb (4)] -> 8 -> 2: (6 * 8 + 8) + (8 * 2 + 2) weights
        assert sum(p.numel() for p in model.parameters()) == 6 * 8 + 8 + 8 * 2 + 2
        # an image preset registered the same way is refused for 2-D data, by the same check
        assert register_model_preset(conv) is conv
        with pytest.raises(ConfigError, match="'conv-toy' denoises images.*mlp2d, mlp-narrow$"):
            build_config({"data": {"name": "toy2d"}, "model": {"preset": "conv-toy"}})
    assert "mlp-narrow" not in MODEL_PRESETS and "conv-toy" not in MODEL_PRESETS


def test_a_registered_labelled_dataset_and_classifier_preset():
    x = torch.linspace(-1, 1, 2 * 4 * 4).reshape(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    images = Dataset(name="two-images", load=lambda o: (x, x), help="",
                     shape=lambda o: (1, 4, 4), labelled=lambda o, split: (x, y))
    linear = ClassifierPreset(
        name="linear-4x4", input_shape=(1, 4, 4), help="",
        build=lambda n_classes, dropout, activation: nn.Sequential(
            nn.Flatten(), nn.Linear(16, n_classes)))
    with pytest.raises(ValueError, match="unknown classifier preset 'linear-4x4'"):
        ModelSpec(preset="linear-4x4")
    with DATASETS.temporary(images.name, images), CLASSIFIER_PRESETS.temporary(linear.name, linear):
        spec = DataSpec(name="two-images")
        xtr, ytr, xte, _ = load_classifier_data(spec)
        assert torch.equal(xtr, (x + 1) / 2) and torch.equal(ytr, y) and xte.shape == (2, 1, 4, 4)
        assert register_classifier_preset(linear) is linear  # the same record again is a no-op
        assert ModelSpec(preset="linear-4x4").preset == "linear-4x4"
        assert classifier_preset_for((1, 4, 4)) == "linear-4x4"
        assert build_classifier("linear-4x4", n_classes=3)(x).shape == (2, 3)
    assert "two-images" not in DATASETS and "linear-4x4" not in CLASSIFIER_PRESETS


def test_builtin_registries():
    assert dataset_names(labelled=True) == ("digits", "cifar10")
    assert classifier_preset_for((1, 8, 8)) == "cnn-digits"
    assert classifier_preset_for((3, 32, 32)) == "cnn-cifar"
    with pytest.raises(ValueError, match="no classifier preset takes images of shape"):
        classifier_preset_for((3, 64, 64))
    with pytest.raises(ValueError, match="unknown labelled dataset 'toy2d'"):
        DataSpec(name="toy2d")


def test_recognize_path(tmp_path):
    assert recognize_path(tmp_path / "missing") is None
    assert recognize_path(tmp_path) == "image_folder"
    (tmp_path / "cifar-10-batches-bin").mkdir()
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"")
    assert recognize_path(tmp_path) == "cifar10"
