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

import hashlib
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


KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # Binkowski et al. 2018's protocol: 100 x 1000


def kid_subset_size(n: int, cap: int = KID_SUBSET_SIZE) -> int:
    """KID's subset size for n images a side: at most `cap` and at most n / 2, so subsets differ
    and the KID std measures something (a subset of all n images has std 0)."""
    return max(2, min(cap, n // 2))


@torch.no_grad()
def extract(images: torch.Tensor, features: nn.Module, batch_size: int = 100) -> torch.Tensor:
    """The network's features of images in [-1, 1], in batches, as float64."""
    return torch.cat([features(images[i:i + batch_size]).double()
                      for i in range(0, len(images), batch_size)])


def scores_from_features(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    kid_subsets: int = KID_SUBSETS,
    kid_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """{"inception_fid", "inception_kid", "inception_kid_std"} of fake vs real features
    (torchmetrics' statistics); kid_size None: kid_subset_size(n)."""
    from flatgen.optional import require

    if "torch_fidelity" not in sys.modules and importlib.util.find_spec("torch_fidelity"):
        _fidelity_module()  # torchmetrics imports torch_fidelity, whose __init__ needs torchvision
    FrechetInceptionDistance = require("torchmetrics.image.fid", "fid",  # noqa: N806
                                       feature="Inception FID").FrechetInceptionDistance
    KernelInceptionDistance = require("torchmetrics.image.kid", "fid",  # noqa: N806
                                      feature="Inception KID").KernelInceptionDistance

    n = min(len(fake), len(real))
    if n < 2:
        raise ValueError(f"Inception FID needs at least 2 images per side, got {n}")
    dim = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Given(dim), reset_real_features=True)
    kid = KernelInceptionDistance(feature=_Given(dim), subsets=kid_subsets,
                                  subset_size=min(kid_size or kid_subset_size(n), n))
    for f, is_real in ((real, True), (fake, False)):
        fid.update(f, real=is_real)
        kid.update(f, real=is_real)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"inception_fid": float(fid.compute()), "inception_kid": float(kid_mean),
            "inception_kid_std": float(kid_std)}


def inception_scores(
    fake: torch.Tensor,
    real: torch.Tensor,
    features: nn.Module,
    *,
    batch_size: int = 100,
    kid_subsets: int = KID_SUBSETS,
    kid_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Inception FID / KID of fake vs real images in [-1, 1]: the network runs once per image,
    both metrics read the same features."""
    return scores_from_features(extract(fake, features, batch_size),
                                extract(real, features, batch_size), kid_subsets=kid_subsets,
                                kid_size=kid_size, seed=seed)


def cache_dir() -> Path:
    """Where real-image features are cached: $FLATGEN_CACHE_DIR, else the XDG cache."""
    if os.environ.get("FLATGEN_CACHE_DIR"):
        return Path(os.environ["FLATGEN_CACHE_DIR"]) / "inception"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flatgen" / "inception"


def _sha256(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()


class InceptionReference:
    """Inception FID / KID against one set of real images, whose features are computed once and
    cached on disk per (data, n, weights file hash): the key is the sha256 of the images'
    bytes and shape, their number and the weights file's sha256, so any change recomputes."""

    def __init__(self, weights: str | Path | None, real: torch.Tensor, *, split: str = "test",
                 cache: Path | None = None, batch_size: int = 100,
                 features: nn.Module | None = None):
        """features: a network used in place of the weights file's (images in [-1, 1] -> (N,
        d)), e.g. a test's small stand-in; weights is then None and nothing is cached."""
        self.split, self.n_real, self.batch_size = split, len(real), batch_size
        if features is not None:
            self.features, self.weights_sha256, self.from_cache = features, None, False
            self.cache_file = None
            self.real_features = extract(real, features, batch_size)
            return
        if weights is None:
            raise ValueError("InceptionReference needs a weights file or a features network")
        path = Path(weights)
        self.features = load_inception_features(path)
        self.weights_sha256 = _sha256(path)
        x = real.detach().cpu().float().contiguous()
        data_key = _sha256(x.numpy().tobytes() + repr(tuple(x.shape)).encode())
        key = _sha256(f"{data_key}:{len(real)}:{self.weights_sha256}".encode())[:32]
        self.cache_file = (cache if cache is not None else cache_dir()) / f"real-{key}.safetensors"
        self.real_features, self.from_cache = self._cached(), True
        if self.real_features is None:
            self.real_features, self.from_cache = extract(real, self.features, batch_size), False
            self._store()

    def _cached(self) -> torch.Tensor | None:
        from safetensors.torch import load_file

        try:
            f = load_file(self.cache_file)["features"]
        except Exception:  # noqa: BLE001 - a missing or unreadable cache is recomputed
            return None
        return f if f.shape == (self.n_real, FEATURES) and torch.isfinite(f).all() else None

    def _store(self) -> None:
        from safetensors.torch import save_file

        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        try:  # a cache only: an unwritable cache folder costs time, not the result
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": self.real_features.contiguous()}, str(tmp))
            os.replace(tmp, self.cache_file)
        except OSError:
            tmp.unlink(missing_ok=True)

    def __call__(self, fake: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
        return scores_from_features(extract(fake, self.features, self.batch_size),
                                    self.real_features, seed=seed)

    def protocol(self, n_fake: int) -> dict[str, object]:
        """What the numbers are: quality.json states it beside them."""
        given = self.weights_sha256 is None
        return {"features": "a given features network" if given
                else "torch-fidelity FID Inception-v3, 2048 pool features",
                "reference": f"{self.split} split", "n_reference": self.n_real,
                "n_fake": n_fake, "kid_subsets": KID_SUBSETS,
                "kid_subset_size": min(kid_subset_size(min(n_fake, self.n_real)), n_fake),
                "weights_sha256": self.weights_sha256}


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
