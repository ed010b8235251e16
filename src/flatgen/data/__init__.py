"""Datasets: digits (embedded default), 2-D toys, image folders and CIFAR-10 from a local path."""

from flatgen.data.digits import load_digits_split
from flatgen.data.images import DataPathError, load_cifar10, load_image_folder
from flatgen.data.toy2d import TOY2D_NAMES, sample_toy2d

__all__ = ["DataPathError", "TOY2D_NAMES", "load_cifar10", "load_digits_split", "load_image_folder", "sample_toy2d"]
