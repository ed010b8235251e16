"""Datasets by name (flatgen.data.registry): digits (embedded default), 2-D toys, image folders
and CIFAR-10 from a local path. Importing this package registers the built-ins."""

from __future__ import annotations

from flatgen.data.digits import load_digits_split
from flatgen.data.images import DataPathError, load_cifar10, load_image_folder
from flatgen.data.registry import (
    DATASETS,
    Dataset,
    check_data_options,
    dataset_names,
    get_dataset,
    load_dataset,
    named_datasets,
    recognize_path,
    register_dataset,
    sample_shape,
)
from flatgen.data.toy2d import TOY2D_NAMES, sample_toy2d

__all__ = [
    "DATASETS",
    "DataPathError",
    "Dataset",
    "TOY2D_NAMES",
    "check_data_options",
    "dataset_names",
    "get_dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits_split",
    "load_image_folder",
    "named_datasets",
    "recognize_path",
    "register_dataset",
    "sample_shape",
    "sample_toy2d",
]
