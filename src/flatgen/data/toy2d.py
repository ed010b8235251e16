"""2-D toy distributions for fast experiments: any sample count, seeded."""

from __future__ import annotations

import math

import numpy as np
import torch

TOY2D_NAMES = ("8gaussians", "swissroll", "moons", "checkerboard")


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
        raise ValueError(f"unknown toy2d distribution {name!r}; choose from {', '.join(TOY2D_NAMES)}")
    return torch.from_numpy(x.astype(np.float32))
