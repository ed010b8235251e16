"""Real image data from a local path: an image folder (PNG/JPEG) or CIFAR-10's binary version.

Nothing is downloaded. CIFAR-10 is read from the *binary* distribution
(cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin: 3073-byte records, one label byte
then 3x32x32 uint8 pixels), so no pickle is ever loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flatgen.data.registry import Dataset, register_dataset

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST_FILES = ["test_batch.bin"]
IMAGE_SPLIT_SEED = 0  # which images of a folder are held out: run-independent


class DataPathError(FileNotFoundError):
    """A local dataset path is missing or does not hold what it should."""


def _to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    import torch  # here, not at the top: the registry loads without torch (fast CLI help)

    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)


# 16-bit grayscale PNGs open in these modes; convert("L") would clip them to white
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _eight_bit(im: Any) -> Any:
    """A 16-bit grayscale image scaled to 8 bits (x 255/65535), any other image as it is."""
    from PIL import Image

    if im.mode not in _SIXTEEN_BIT:
        return im
    a = np.asarray(im, dtype=np.float64)
    if a.min() < 0 or a.max() > 65535:
        raise ValueError(f"{im.mode} pixel values outside 0..65535")
    return Image.fromarray(np.rint(a * (255 / 65535)).astype(np.uint8), mode="L")


def load_image_folder(path: str | Path, size: int, channels: int = 3) -> torch.Tensor:
    """Load every PNG/JPEG under path (recursively), resized to size x size, in [-1, 1]."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataPathError(
            f"image folder {str(root)!r} does not exist: put PNG or JPEG files in it "
            "(sub-folders are searched too) or set data.path"
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataPathError(f"image folder {str(root)!r} holds no .png/.jpg/.jpeg files")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")
    arrays, corrupt = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im = _eight_bit(im).convert(mode).resize((size, size), Image.BICUBIC)
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError):  # unreadable or truncated
            corrupt.append(f)
            continue
        arrays.append(a[:, :, None] if a.ndim == 2 else a)
    if corrupt:
        names = ", ".join(str(p.relative_to(root)) for p in corrupt[:5])
        more = f" and {len(corrupt) - 5} more" if len(corrupt) > 5 else ""
        raise DataPathError(f"image folder {str(root)!r} has {len(corrupt)} unreadable image "
                            f"file(s): {names}{more}; remove or replace them")
    return _to_unit_range(np.stack(arrays).transpose(0, 3, 1, 2))


def _cifar_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-bin"):
        if (candidate / CIFAR_TEST_FILES[0]).is_file():
            return candidate
    return None


def _find_cifar_dir(path: Path) -> Path:
    found = _cifar_dir(path)
    if found is not None:
        return found
    raise DataPathError(
        f"CIFAR-10 not found at {str(path)!r}: download the *binary* version "
        "(cifar-10-binary.tar.gz) yourself, extract it, and point data.path at the folder "
        "holding data_batch_1.bin ... test_batch.bin (or at its parent)"
    )


def load_cifar10(path: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images N x 3 x 32 x 32 in [-1, 1], labels N) from the CIFAR-10 binary files."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = _find_cifar_dir(Path(path))
    names = CIFAR_TRAIN_FILES if split == "train" else CIFAR_TEST_FILES
    records = []
    for name in names:
        f = root / name
        if not f.is_file():
            raise DataPathError(f"CIFAR-10 file {str(f)!r} is missing")
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size == 0 or raw.size % CIFAR_RECORD:
            state = "empty" if raw.size == 0 else f"truncated ({raw.size} bytes, not whole records)"
            raise DataPathError(f"CIFAR-10 file {str(f)!r} is {state}: extract "
                                "cifar-10-binary.tar.gz again")
        records.append(raw.reshape(-1, CIFAR_RECORD))
    data = np.concatenate(records)
    import torch

    labels = torch.from_numpy(data[:, 0].astype(np.int64))
    return _to_unit_range(data[:, 1:].reshape(-1, 3, 32, 32)), labels


def split_image_folder(opts: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) of an image folder: a fixed random test_fraction of it is held out."""
    import torch

    images = load_image_folder(opts.path, opts.image_size, opts.channels)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(IMAGE_SPLIT_SEED))
    n_test = max(1, round(opts.test_fraction * len(images)))
    if n_test >= len(images):
        raise DataPathError(f"image folder {opts.path!r} has too few images ({len(images)}) "
                            "to split")
    return images[order[n_test:]], images[order[:n_test]]


# cifar10 is checked before image_folder: a CIFAR-10 folder is recognized as such
register_dataset(Dataset(
    name="cifar10",
    load=lambda opts: (load_cifar10(opts.path, "train")[0], load_cifar10(opts.path, "test")[0]),
    shape=lambda opts: (3, 32, 32),
    help="CIFAR-10's binary version from data.path (50000 / 10000 images, labelled)",
    options=("path",),
    requires_path=True,
    labelled=lambda opts, split: load_cifar10(opts.path, split),
    recognizes=lambda path: _cifar_dir(path) is not None,
))
register_dataset(Dataset(
    name="image_folder",
    load=split_image_folder,
    shape=lambda opts: (opts.channels, opts.image_size, opts.image_size),
    help="PNG/JPEG files under data.path, resized to image_size, test_fraction held out",
    options=("path", "image_size", "channels", "test_fraction"),
    requires_path=True,
    recognizes=Path.is_dir,
))
