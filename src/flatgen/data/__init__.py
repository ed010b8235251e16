"""Datasets: digits (embedded default), 2-D toys, image folders and CIFAR-10 from a local path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from flatgen.data.digits import load_digits_split
from flatgen.data.images import DataPathError, load_cifar10, load_image_folder
from flatgen.data.toy2d import TOY2D_NAMES, sample_toy2d

if TYPE_CHECKING:
    from flatgen.config import DataConfig

# toy2d train and test sets are fixed draws, independent of the training seed
TOY_TRAIN_SEED, TOY_TEST_SEED = 0, 1
IMAGE_SPLIT_SEED = 0


def load_dataset(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) tensors for a data config: images N x C x H x W in [-1, 1], or N x 2 points."""
    if cfg.name == "digits":
        return load_digits_split("train")[0], load_digits_split("test")[0]
    if cfg.name == "toy2d":
        return (
            sample_toy2d(cfg.toy, cfg.n_train, TOY_TRAIN_SEED),
            sample_toy2d(cfg.toy, cfg.n_test, TOY_TEST_SEED),
        )
    if cfg.name == "cifar10":
        return load_cifar10(cfg.path, "train")[0], load_cifar10(cfg.path, "test")[0]
    if cfg.name == "image_folder":
        images = load_image_folder(cfg.path, cfg.image_size, cfg.channels)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(IMAGE_SPLIT_SEED))
        n_test = max(1, round(cfg.test_fraction * len(images)))
        if n_test >= len(images):
            raise DataPathError(f"image folder {cfg.path!r} has too few images ({len(images)}) to split")
        return images[order[n_test:]], images[order[:n_test]]
    raise ValueError(f"unknown dataset {cfg.name!r}")


__all__ = [
    "DataPathError",
    "TOY2D_NAMES",
    "load_cifar10",
    "load_dataset",
    "load_digits_split",
    "load_image_folder",
    "sample_toy2d",
]
