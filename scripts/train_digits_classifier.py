"""Train the digits classifier whose features define digits-FID, and write it to the package assets.

Deterministic: the same seed gives the same weights on the same machine. Writes
src/flatgen/assets/digits_classifier.safetensors and digits_classifier.json (test accuracy,
command, settings).

    python scripts/train_digits_classifier.py [--epochs 60] [--seed 0] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from flatgen.data import load_digits_split
from flatgen.io import atomic_write
from flatgen.metrics.digits_classifier import WEIGHTS_NAME, DigitsClassifier, digits_accuracy

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "flatgen" / "assets"
MIN_TEST_ACCURACY = 0.97


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to max_shift pixels in x and y, filling with background (-1)."""
    n = len(x)
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train(epochs: int, seed: int, batch_size: int, lr: float, max_shift: int) -> DigitsClassifier:
    """Train on the train split (AdamW, small random shifts); calibrate the feature scale."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits_split("train")
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = random_shift(x[idx], max_shift, gen) if max_shift > 0 else x[idx]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}/{epochs}  train loss {total / len(x):.4f}", flush=True)
    model.calibrate_feature_scale(x)
    return model.eval()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of the tensors (names and bytes); the file's own bytes vary with header key order."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-shift", type=int, default=1, help="augmentation shift in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = train(args.epochs, args.seed, args.batch_size, args.lr, args.max_shift)
    x_test, y_test = load_digits_split("test")
    acc = digits_accuracy(x_test, y_test, model)
    print(f"test accuracy {acc:.4f} ({len(y_test)} images)")
    if acc < MIN_TEST_ACCURACY:
        print(f"error: test accuracy {acc:.4f} < {MIN_TEST_ACCURACY}; weights not written")
        return 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / WEIGHTS_NAME
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"width": str(model.width), "feature_dim": str(model.feature_dim)}
    atomic_write(weights, lambda p: save_file(state, str(p), metadata=meta))
    info = {
        "test_accuracy": acc,
        "n_test": len(y_test),
        "command": shlex.join(
            [
                "python",
                "scripts/train_digits_classifier.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out_dir"
        },
        "architecture": meta,
        "feature_scale": float(model.feature_scale),
        "tensors_sha256": tensors_sha256(state),
        "torch": torch.__version__,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write(
        weights.with_suffix(".json"), lambda p: p.write_text(json.dumps(info, indent=2) + "\n")
    )
    print(
        f"wrote {weights} ({weights.stat().st_size / 1024:.0f} KiB) and "
        f"{weights.with_suffix('.json').name}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
