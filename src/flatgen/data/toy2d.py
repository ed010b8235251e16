"""2-D toy distributions for fast experiments: any sample count, seeded."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from flatgen.data.registry import Dataset, register_dataset

if TYPE_CHECKING:
    import torch

TOY2D_NAMES = ("8gaussians", "swissroll", "moons", "checkerboard")
# the train and test sets are fixed draws, independent of the training seed
TOY_TRAIN_SEED, TOY_TEST_SEED = 0, 1


def sample_toy2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Draw n points (n x 2, float32, roughly unit scale) from the named toy distribution."""
    rng = np.random.default_rng(seed)
    if name == "8gaussians":
        angles = 2 * math.pi * rng.integers(0, 8, n) / 8
        centers = np.stack([np.cos(angles), np.sin(angles)], 1) * 2.0
        x = centers + 0.15 * rng.standard_normal((n, 2))
    elif name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * rng.random(n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5.0 + 0.1 * rng.standard_normal((n, 2))
    elif name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(n, noise=0.08, random_state=int(rng.integers(2**31)))
        x = (x - np.array([0.5, 0.25])) * 1.5
    elif name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
        x2 = x2 + (np.floor(x1) % 2)
        x = np.stack([x1, x2], 1)
    else:
        raise ValueError(f"unknown toy2d distribution {name!r}; "
                         f"choose from {', '.join(TOY2D_NAMES)}")
    import torch  # here, not at the top: the registry loads without torch (fast CLI help)

    return torch.from_numpy(x.astype(np.float32))


def _check(opts: Any) -> None:
    if opts.toy not in TOY2D_NAMES:
        raise ValueError(f"data.toy must be one of {', '.join(TOY2D_NAMES)}, got {opts.toy!r}")


register_dataset(Dataset(
    name="toy2d",
    load=lambda opts: (sample_toy2d(opts.toy, opts.n_train, TOY_TRAIN_SEED),
                       sample_toy2d(opts.toy, opts.n_test, TOY_TEST_SEED)),
    shape=lambda opts: (2,),
    help=f"2-D points from data.toy ({', '.join(TOY2D_NAMES)}), n_train / n_test of them",
    options=("toy", "n_train", "n_test"),
    check=_check,
))
