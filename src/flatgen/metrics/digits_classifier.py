"""A small CNN classifier for 8x8 digits whose penultimate features define digits-FID.

Weights ship with the package (assets/digits_classifier.safetensors); they are produced by
scripts/train_digits_classifier.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from flatgen.metrics._arrays import ArrayLike

WEIGHTS_NAME = "digits_classifier.safetensors"
DIGITS_SHAPE = (1, 8, 8)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with model in eval mode, restoring its train/eval flag afterwards."""
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


class DigitsClassifier(nn.Module):
    """2 conv layers, a linear embedding (the features), ReLU, a linear head;
    input 1x8x8 in [-1, 1].

    features() returns the embedding before its ReLU (after it, many units are zero on every
    digit and the feature covariance would be singular), times a fixed feature_scale set after
    training so that |f|^2 / d averages 1 on the train split: the KID kernel (f.g / d + 1)^3
    assumes features of that scale.
    """

    def __init__(self, width: int = 32, feature_dim: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.width, self.feature_dim = width, feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(feature_dim, n_classes))
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding (pre-ReLU, scaled), N x feature_dim."""
        return self.body(x) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, N x n_classes (independent of feature_scale)."""
        return self.head(self.body(x))

    @torch.no_grad()
    def calibrate_feature_scale(self, x: torch.Tensor) -> float:
        """Set feature_scale so that mean |features(x)|^2 / feature_dim is 1; return it."""
        with _eval_mode(self):
            emb = self.body(x)
        scale = float(emb.pow(2).mean().rsqrt())
        self.feature_scale.fill_(scale)
        return scale


def default_weights_path() -> Path:
    """Path of the shipped classifier weights inside the installed package."""
    return Path(str(resources.files("flatgen") / "assets" / WEIGHTS_NAME))


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """Load the classifier (shipped weights unless path is given), in eval mode on the CPU."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"digits classifier weights not found at {path}; "
            "create them with: python scripts/train_digits_classifier.py"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model = DigitsClassifier(
        width=int(meta.get("width", 32)), feature_dim=int(meta.get("feature_dim", 64))
    )
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def _as_digit_batch(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    t = t.detach().to("cpu", torch.float32)
    if t.ndim == 3 and tuple(t.shape[1:]) == DIGITS_SHAPE[1:]:
        t = t.unsqueeze(1)
    if t.ndim != 4 or tuple(t.shape[1:]) != DIGITS_SHAPE:
        raise ValueError(f"expected digits of shape N x 1 x 8 x 8, got {tuple(t.shape)}")
    return t


@torch.no_grad()
def digits_features(
    x: ArrayLike, classifier: DigitsClassifier | None = None, batch_size: int = 1024
) -> np.ndarray:
    """Classifier features (float64, N x feature_dim) of digits N x 1 x 8 x 8 in [-1, 1]."""
    model = classifier if classifier is not None else load_digits_classifier()
    t = _as_digit_batch(x)
    device = next(model.parameters()).device
    with _eval_mode(model):
        feats = [
            model.features(t[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(t), batch_size)
        ]
    return torch.cat(feats).double().numpy()


@torch.no_grad()
def digits_accuracy(
    x: ArrayLike, labels: ArrayLike, classifier: DigitsClassifier | None = None
) -> float:
    """Fraction of digits the classifier labels correctly."""
    model = classifier if classifier is not None else load_digits_classifier()
    t = _as_digit_batch(x).to(next(model.parameters()).device)
    with _eval_mode(model):
        pred = model(t).argmax(dim=1).cpu()
    return float((pred == torch.as_tensor(labels).cpu()).float().mean())
