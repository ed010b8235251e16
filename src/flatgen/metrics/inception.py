"""Inception FID and KID for image datasets: torch-fidelity's FID Inception-v3, torchmetrics' stats.

The network is torch-fidelity's port of the TensorFlow FID Inception (the one behind published
CIFAR-10 FIDs). Its weights are never downloaded: the user names a local file, with
--inception-weights PATH or FLATGEN_INCEPTION_WEIGHTS. flatgen reads it as safetensors only
and hands the state dict to torch-fidelity in place of its downloader, so nothing is unpickled.

torch-fidelity publishes the weights as a .pth; convert it once with

    python -m flatgen.metrics.inception convert weights-inception-2015-12-05-6726825d.pth \
        inception-2015-12-05.safetensors

`convert` is the one place flatgen reads a .pth: torch.load(weights_only=True), which refuses
pickled code and accepts tensors only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ENV_VAR = "FLATGEN_INCEPTION_WEIGHTS"
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
CONVERT = "python -m flatgen.metrics.inception convert SRC.pth DST.safetensors"
FEATURES = 2048


def inception_weights_path(path: str | Path | None = None) -> Path | None:
    """The weights file the user named (option first, then $FLATGEN_INCEPTION_WEIGHTS), or None."""
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
    return Path(path) if path is not None else None


def _missing_weights(path: Path) -> ValueError:
    return ValueError(
        f"Inception weights not found at {str(path)!r}: convert torch-fidelity's {WEIGHTS_NAME} "
        f"(its v0.2.0 release) once with `{CONVERT}` and name the .safetensors with "
        f"--inception-weights or {ENV_VAR}")


def _fidelity_module():
    """torch_fidelity.feature_extractor_inceptionv3. torch-fidelity's package __init__ imports
    torchvision (for its datasets); where no torchvision matches the installed torch, the
    Inception module, which never uses it, is imported without running that __init__."""
    name = "torch_fidelity.feature_extractor_inceptionv3"
    try:
        return importlib.import_module(name)
    except ImportError as err:
        if "torchvision" not in str(err) and "torch_fidelity" in str(err):
            raise ValueError("Inception FID needs torch-fidelity: pip install "
                             "'flatgen[fid]'") from None
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("Inception FID needs torch-fidelity: pip install 'flatgen[fid]'")
    for key in [k for k in sys.modules if k == "torch_fidelity" or k.startswith("torch_fidelity.")]:
        del sys.modules[key]  # the half-imported package
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = package
    return importlib.import_module(name)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a safetensors file (a .pth is refused: convert it once, see above)."""
    if not path.is_file():
        raise _missing_weights(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Inception weights {str(path)!r} are not safetensors: flatgen unpickles "
                         f"nothing; convert them once with `{CONVERT}`")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read Inception weights {str(path)!r}: "
                         f"{err}".splitlines()[0]) from None


def convert(src: str | Path, dst: str | Path) -> Path:
    """Write the tensors of torch-fidelity's .pth as safetensors: the one torch.load in flatgen,
    with weights_only=True (tensors and plain containers only, no pickled code)."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"{str(src)!r} not found")
    if dst.suffix != ".safetensors":
        raise ValueError(f"the converted file must end in .safetensors, got {str(dst)!r}")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot read {str(src)!r} as tensors: {err}".splitlines()[0]) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(src)!r} does not hold a state dict of tensors")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    return dst


@contextmanager
def _local_weights(module, state: dict[str, torch.Tensor]):
    # torch-fidelity fetches its weights with torch.hub's downloader when no path is given;
    # answer that call with the local state dict, so nothing is downloaded or unpickled
    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        module.load_state_dict_from_url = original


def build_inception(state: dict[str, torch.Tensor]) -> nn.Module:
    """torch-fidelity's FID Inception-v3 with the given weights, giving 2048 pool features."""
    module = _fidelity_module()
    with _local_weights(module, state):
        return module.FeatureExtractorInceptionV3("inception-v3-compat", [str(FEATURES)])


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] (N, 1 or 3, H, W) -> the 2048 pool features of the FID Inception."""

    num_features = FEATURES

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:  # the network was trained on 8-bit RGB
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception FID needs 1- or 3-channel images, got {x.shape[1]}")
        return self.inception(x)[0]


def load_inception_features(path: str | Path) -> InceptionFeatures:
    """The feature extractor for a weights file the user named (ValueError when missing)."""
    return InceptionFeatures(build_inception(load_state(Path(path))))


class _Given(nn.Module):
    """What torchmetrics calls its feature extractor, for features computed already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


@torch.no_grad()
def inception_scores(
    fake: torch.Tensor,
    real: torch.Tensor,
    features: nn.Module,
    *,
    batch_size: int = 100,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """{"inception_fid", "inception_kid"} of fake vs real images in [-1, 1] (torchmetrics)."""
    from flatgen.optional import require

    FrechetInceptionDistance = require("torchmetrics.image.fid", "fid",  # noqa: N806
                                       feature="Inception FID").FrechetInceptionDistance
    KernelInceptionDistance = require("torchmetrics.image.kid", "fid",  # noqa: N806
                                      feature="Inception KID").KernelInceptionDistance

    n = min(len(fake), len(real))
    if n < 2:
        raise ValueError(f"Inception FID needs at least 2 images per side, got {n}")
    # the network runs once per image; both metrics then read the same features
    feats = {is_real: torch.cat([features(images[i:i + batch_size]).double()
                                 for i in range(0, len(images), batch_size)])
             for images, is_real in ((real, True), (fake, False))}
    dim = feats[True].shape[1]
    fid = FrechetInceptionDistance(feature=_Given(dim), reset_real_features=True)
    kid = KernelInceptionDistance(feature=_Given(dim), subsets=kid_subsets, subset_size=n)
    for is_real, f in feats.items():
        fid.update(f, real=is_real)
        kid.update(f, real=is_real)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, _ = kid.compute()
    return {"inception_fid": float(fid.compute()), "inception_kid": float(kid_mean)}


def main(argv: list[str] | None = None) -> int:
    """`python -m flatgen.metrics.inception convert SRC.pth DST.safetensors`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "convert":
        print(f"usage: {CONVERT}", file=sys.stderr)
        return 2
    try:
        dst = convert(args[1], args[2])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
