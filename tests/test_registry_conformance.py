"""Every registered entry keeps its registry's contract (as pytorch_optimizer tests every
optimizer): SAM variants round-trip their state and leave no trace of a failed step, datasets
load samples of the shape they declare, model and classifier presets run on theirs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from flatgen.classify.models import CLASSIFIER_PRESETS, build_classifier
from flatgen.config import DataConfig
from flatgen.data import DATASETS, get_dataset, recognize_path
from flatgen.models import MODEL_PRESETS
from flatgen.optim import SAM_VARIANTS, sam_adamw
from flatgen.registry import Registry

# -- SAM variants -------------------------------------------------------------------------------

X, Y = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.randn(12, 1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()


def _optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    # k=2: the every-k variants alternate SAM and cheap steps; AdamW has the momentum that
    # MomentumSAM perturbs along
    return sam_adamw(model.parameters(), name, rho=0.05, options={"k": 2}, lr=0.01)


def _closure(model, opt, *, fail_when_perturbed: bool = False):
    def closure():
        if fail_when_perturbed and opt.perturbed:
            raise RuntimeError("closure failed mid-step")
        opt.zero_grad()
        loss = (model(X.double()) - Y.double()).pow(2).mean()
        loss.backward()
        return loss

    return closure


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", SAM_VARIANTS.names())
def test_sam_variant_state_dict_round_trip(name, one_thread):
    m1 = _model()
    o1 = _optimizer(name, m1)
    for _ in range(3):  # an odd count: mid-cycle for the every-k variants (LookSAM's g_v in use)
        o1.step(_closure(m1, o1))
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # tensors and plain values only

    m2 = _model()
    o2 = _optimizer(name, m2)
    m2.load_state_dict(saved["model"])
    o2.load_state_dict(saved["opt"])
    assert type(o2) is SAM_VARIANTS[name] and o2.num_steps == o1.num_steps == 3
    for _ in range(4):
        o1.step(_closure(m1, o1))
        o2.step(_closure(m2, o2))
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", SAM_VARIANTS.names())
def test_sam_variant_restores_weights_when_the_closure_raises(name, one_thread):
    model, twin = _model(), _model()
    opt, twin_opt = _optimizer(name, model), _optimizer(name, twin)
    raised = 0
    for _ in range(4):  # SAM and cheap steps alike; MomentumSAM perturbs once it has momentum
        before = _weights(model)
        try:
            opt.step(_closure(model, opt, fail_when_perturbed=True))
        except RuntimeError as err:
            assert "mid-step" in str(err)
            raised += 1
            assert not opt.perturbed
            for p, w in zip(model.parameters(), before, strict=True):
                assert torch.equal(p, w)  # bit for bit, and no base step taken
        else:
            twin_opt.step(_closure(twin, twin_opt))  # the twin takes the steps that completed
        # a failed step leaves no trace: the next full step matches the twin's
        opt.step(_closure(model, opt))
        twin_opt.step(_closure(twin, twin_opt))
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p, q)
    assert raised >= 1, f"{name} was never perturbed when its closure ran"


# -- datasets -----------------------------------------------------------------------------------


def _cifar_folder(root: Path) -> dict:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()
    for name, labels in [*((f"data_batch_{i}.bin", [i, 9 - i]) for i in range(1, 6)),
                         ("test_batch.bin", [3, 4, 5])]:
        pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        np.concatenate([np.array(labels, np.uint8)[:, None], pixels], 1).tofile(folder / name)
    return {"path": str(root)}


def _image_folder(root: Path) -> dict:
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return {"path": str(root), "image_size": 8, "channels": 3, "test_fraction": 0.34}


# datasets read from data.path: how to write a tiny local copy (a new one adds its own here)
LOCAL_COPIES = {"cifar10": _cifar_folder, "image_folder": _image_folder}


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_loads_a_batch_of_its_declared_shape(name, tmp_path):
    dataset = get_dataset(name)
    options = {"n_train": 64, "n_test": 16}
    if dataset.requires_path:
        assert name in LOCAL_COPIES, f"dataset {name!r} needs a tiny local copy in LOCAL_COPIES"
        options |= LOCAL_COPIES[name](tmp_path)
    opts = DataConfig(name=name, **options)
    shape = tuple(dataset.shape(opts))
    train, test = dataset.load(opts)
    for split in (train, test):
        assert tuple(split[:2].shape) == (2, *shape)
        assert split.dtype == torch.float32 and torch.isfinite(split).all()
        if len(shape) == 3:  # images are scaled to [-1, 1]; vectors (toy2d) are not
            assert split.min() >= -1 and split.max() <= 1
    if dataset.labelled is not None:
        images, labels = dataset.labelled(opts, "test")
        assert tuple(images.shape[1:]) == shape and len(labels) == len(images)
        assert labels.dtype == torch.int64 and 0 <= int(labels.min()) <= int(labels.max()) < 10
    if dataset.requires_path and dataset.recognizes is not None:
        assert dataset.recognizes(tmp_path) and recognize_path(tmp_path) == name


# -- model and classifier presets ---------------------------------------------------------------

# the sample each built-in denoiser preset is made for (ModelPreset.sample_shape, where the
# preset declares one, comes first)
SAMPLE_SHAPES = {"mlp2d": (2,), "unet-digits": (1, 8, 8), "unet-adm32": (3, 32, 32),
                 "unet-adm-cifar10": (3, 32, 32)}


@pytest.mark.parametrize("name", MODEL_PRESETS.names())
def test_model_preset_builds_and_denoises_its_sample_shape(name, one_thread):
    preset = MODEL_PRESETS[name]
    shape = preset.sample_shape or SAMPLE_SHAPES.get(name)
    assert shape is not None, f"model preset {name!r} declares no sample shape"
    assert len(shape) == preset.sample_ndim
    torch.manual_seed(0)
    net = preset.build(shape, None).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = net(x, torch.tensor([1, 7]))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", CLASSIFIER_PRESETS.names())
def test_classifier_preset_builds_and_classifies_its_input_shape(name, one_thread):
    preset = CLASSIFIER_PRESETS[name]
    torch.manual_seed(0)
    net = build_classifier(name, n_classes=10).eval()
    x = torch.rand(2, *preset.input_shape)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert build_classifier(name, n_classes=3)(x).shape == (2, 3)


# -- the registry itself ------------------------------------------------------------------------


def test_temporary_restores_a_shadowed_entry_in_place():
    reg: Registry[int] = Registry("number")
    reg.register("one", 1)
    reg.register("two", 2)
    with reg.temporary("one", 11) as entry:
        assert entry == 11 and reg.get("one") == 11
    assert reg.get("one") == 1 and reg.names() == ("one", "two")  # back, in its place
    with pytest.raises(KeyError), reg.temporary("three", 3):
        assert reg.names() == ("one", "two", "three")
        raise KeyError("the block fails")
    assert "three" not in reg and reg.names() == ("one", "two")  # undone however it ends
    with pytest.raises(ValueError, match="a number named 'two' is already registered"):
        reg.register("two", 22)
    with pytest.raises(ValueError, match="unknown number 'four'; choose from one, two"):
        reg.get("four")


def test_temporary_shadows_a_built_in_dataset():
    builtin, order = DATASETS["toy2d"], DATASETS.names()
    fake = type(builtin)(name="toy2d", load=builtin.load, shape=lambda opts: (3,), help="fake")
    with DATASETS.temporary("toy2d", fake):
        assert get_dataset("toy2d") is fake
    assert get_dataset("toy2d") is builtin and DATASETS.names() == order
