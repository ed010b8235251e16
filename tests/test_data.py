import numpy as np
import pytest
import torch
from PIL import Image

from flatgen.config import build_config
from flatgen.data import (
    TOY2D_NAMES,
    DataPathError,
    load_cifar10,
    load_dataset,
    load_digits_split,
    load_image_folder,
    sample_toy2d,
)


def test_digits_split_is_fixed_and_disjoint():
    xtr, ytr = load_digits_split("train")
    xte, yte = load_digits_split("test")
    assert xtr.shape == (1500, 1, 8, 8) and xte.shape == (297, 1, 8, 8)
    assert xtr.min() >= -1 and xtr.max() <= 1 and xtr.min() == -1 and xtr.max() == 1
    assert torch.equal(load_digits_split("train")[0], xtr)
    # train and test together are exactly the 1797 digits, each used once
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().images.astype(np.float32) / 8 - 1).flatten(1)
    both = torch.cat([xtr, xte]).flatten(1)
    assert torch.equal(torch.unique(full, dim=0, return_counts=True)[1],
                       torch.unique(both, dim=0, return_counts=True)[1])
    assert set(ytr.unique().tolist()) == set(range(10)) == set(yte.unique().tolist())


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_toy2d_seeded(name):
    a, b, c = sample_toy2d(name, 300, 0), sample_toy2d(name, 300, 0), sample_toy2d(name, 300, 1)
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 10


def test_toy2d_unknown():
    with pytest.raises(ValueError, match="unknown toy2d"):
        sample_toy2d("spiral", 10)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    for i in range(5):
        arr = rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / ("sub" if i % 2 else ".") / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8)).save(tmp_path / "gray.jpg")
    x = load_image_folder(tmp_path, size=8, channels=3)
    assert x.shape == (6, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert load_image_folder(tmp_path, size=4, channels=1).shape == (6, 1, 4, 4)
    cfg = build_config({"data": {"name": "image_folder", "path": str(tmp_path), "image_size": 8,
                                 "test_fraction": 0.34}, "model": {"preset": "unet-digits"}})
    train, test = load_dataset(cfg.data)
    assert len(train) == 4 and len(test) == 2


def test_image_folder_missing(tmp_path):
    with pytest.raises(DataPathError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 8)
    with pytest.raises(DataPathError, match="holds no"):
        load_image_folder(tmp_path, 8)


def _write_cifar_batch(path, labels, rng):
    records = np.concatenate(
        [np.array(labels, np.uint8)[:, None],
         rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)], 1
    )
    records.tofile(path)
    return records


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    batches = [_write_cifar_batch(root / f"data_batch_{i}.bin", [i, 9 - i], rng)
               for i in range(1, 6)]
    _write_cifar_batch(root / "test_batch.bin", [3, 4, 5], rng)
    x, y = load_cifar10(tmp_path, "train")  # the parent folder works too
    assert x.shape == (10, 3, 32, 32) and y.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    # pixel layout: channel-major 32x32 planes, as in the CIFAR-10 binary format
    first = batches[0][0, 1:].reshape(3, 32, 32).astype(np.float32) / 127.5 - 1
    assert np.allclose(x[0].numpy(), first)
    assert load_cifar10(root, "test")[0].shape == (3, 3, 32, 32)


def test_cifar10_missing(tmp_path):
    with pytest.raises(DataPathError, match="binary"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(DataPathError, match="data_batch_1.bin"):
        load_cifar10(tmp_path, "train")


def test_image_folder_lists_corrupt_files_by_name(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"ok{i}.png")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "ok0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])  # truncated mid-stream
    with pytest.raises(DataPathError, match=r"2 unreadable image file\(s\): cut.png, garbage.png;"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "garbage.png").unlink()
    (tmp_path / "cut.png").unlink()
    assert load_image_folder(tmp_path, 8).shape == (3, 3, 8, 8)


@pytest.mark.parametrize("size, state", [(0, "is empty"), (3073 + 100, "is truncated")])
def test_cifar10_empty_or_truncated_file_refused(tmp_path, size, state):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write_cifar_batch(tmp_path / f"data_batch_{i}.bin", [1, 2], rng)
    (tmp_path / "test_batch.bin").write_bytes(bytes(size))
    with pytest.raises(DataPathError, match=f"test_batch.bin' {state}"):
        load_cifar10(tmp_path, "test")
    assert load_cifar10(tmp_path, "train")[0].shape == (10, 3, 32, 32)
