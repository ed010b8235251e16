"""scikit-learn's 8x8 digits: the embedded default dataset.

Pixels (0..16) are scaled to [-1, 1]. The train/test split is fixed by a seed so every
command, metric and test sees the same 1500 / 297 images.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from flatgen.data.registry import Dataset, register_dataset

if TYPE_CHECKING:
    import torch

N_TEST = 297
SPLIT_SEED = 0


@lru_cache(maxsize=4)
def _split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0  # [-1, 1]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:N_TEST], order[N_TEST:]
    return images[train], labels[train], images[test], labels[test]


def load_digits_split(
    split: str = "train", seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images N x 1 x 8 x 8 in [-1, 1], labels N) for split 'train' or 'test'."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    import torch  # here, not at the top: the registry loads without torch (fast CLI help)

    xtr, ytr, xte, yte = _split(seed)
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.copy())


register_dataset(Dataset(
    name="digits",
    load=lambda opts: (load_digits_split("train")[0], load_digits_split("test")[0]),
    shape=lambda opts: (1, 8, 8),
    help="scikit-learn's 8x8 digits, embedded (1500 train / 297 test images, labelled)",
    labelled=lambda opts, split: load_digits_split(split),
))
