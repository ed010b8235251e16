"""Inception FID / KID: torch-fidelity's FID Inception with weights from a local file (here a
randomly initialised network of the same architecture, saved by the test), torchmetrics' stats."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from flatgen.metrics import frechet_distance_from_features, kid
from flatgen.metrics.inception import (
    ENV_VAR,
    inception_scores,
    inception_weights_path,
    load_inception_features,
)


def test_weights_come_from_the_named_file(random_inception_file, one_thread):
    path, net = random_inception_file
    features = load_inception_features(path)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = net(((x + 1) * 127.5).round().to(torch.uint8))[0]
    assert torch.allclose(features(x), expected, atol=1e-5)
    assert features(x).shape == (2, 2048)
    gray = torch.rand(2, 1, 16, 16) * 2 - 1  # 1-channel images are repeated to RGB
    assert torch.allclose(features(gray), features(gray.expand(-1, 3, -1, -1)))


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="weights-inception-2015-12-05") as err:
        load_inception_features(tmp_path / "nope.pth")
    assert str(tmp_path / "nope.pth") in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "w.pth"))
    assert inception_weights_path() == tmp_path / "w.pth"
    assert inception_weights_path(tmp_path / "x") == tmp_path / "x"


def test_fid_matches_the_closed_form_on_the_same_features():
    """torchmetrics' FID and KID on the extracted features = flatgen's own Frechet distance and
    KID of the same features (a small random feature map stands in for the network here; the
    test above checks the network)."""
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 8, 8, generator=g) * 2 - 1
    fake = (real + 0.4 * torch.randn(40, 3, 8, 8, generator=g)).clamp(-1, 1)
    # one KID subset of all 40 images: the unbiased MMD^2 of the whole sets, deterministic
    scores = inception_scores(fake, real, features, kid_subsets=1, kid_size=40)
    with torch.no_grad():
        f_fake, f_real = features(fake).double().numpy(), features(real).double().numpy()
    assert scores["inception_fid"] == pytest.approx(frechet_distance_from_features(f_fake, f_real),
                                                    rel=1e-3)
    assert scores["inception_kid"] == pytest.approx(kid(f_fake, f_real)[0], rel=1e-3, abs=1e-12)
    assert frechet_distance_from_features(f_real, f_real) < 1e-6 * scores["inception_fid"]
    assert np.isfinite(scores["inception_kid"])


def test_digits_keep_digits_fid(random_inception_file):
    from flatgen.evaluate import _inception_metric

    path, _ = random_inception_file
    assert _inception_metric(path, torch.zeros(4, 1, 8, 8)) is None  # digits: their own FID
    assert _inception_metric(None, torch.zeros(4, 3, 32, 32)) is None  # no weights named
    assert _inception_metric(path, torch.zeros(4, 3, 32, 32)) is not None


def test_a_pth_is_refused_and_convert_is_the_one_reader(tmp_path, capsys):
    """No torch.load outside `convert`: a .pth names the conversion; convert writes the same
    tensors as safetensors (weights_only=True: a pickled object is refused)."""
    import subprocess
    import sys
    from pathlib import Path

    from flatgen.metrics import inception

    state = {"a.weight": torch.randn(3, 2), "b.bias": torch.arange(4.0)}
    pth = tmp_path / "w.pth"
    torch.save(state, pth)
    with pytest.raises(ValueError, match="inception convert") as err:
        inception.load_state(pth)
    assert "\n" not in str(err.value)
    assert inception.main(["convert", str(pth), str(tmp_path / "w.safetensors")]) == 0
    back = inception.load_state(tmp_path / "w.safetensors")
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)

    class Evil:
        def __reduce__(self):
            return (print, ("ran pickled code",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    evil = ["convert", str(tmp_path / "evil.pth"), str(tmp_path / "e.safetensors")]
    assert inception.main(evil) == 2
    assert "ran pickled code" not in capsys.readouterr().out
    assert not (tmp_path / "e.safetensors").exists()
    # the documented command, as a module
    src = Path(inception.__file__).parents[2]
    done = subprocess.run([sys.executable, "-m", "flatgen.metrics.inception", "convert", str(pth),
                           str(tmp_path / "m.safetensors")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and (tmp_path / "m.safetensors").is_file(), done.stderr
    # torch.load appears in no other module
    users = [p for p in src.joinpath("flatgen").rglob("*.py") if "torch.load(" in p.read_text()]
    assert [p.name for p in users] == ["inception.py"]


def test_kid_subsets_are_smaller_than_n():
    """KID's default subsets are at most half the images, so its std is not 0 (with subsets of
    all n images every subset is the same and the std is 0)."""
    from flatgen.metrics.inception import kid_subset_size, scores_from_features

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 5, generator=g).double(), torch.randn(60, 5, generator=g).double()
    assert kid_subset_size(60) == 30 and kid_subset_size(50_000) == 1000
    assert scores_from_features(fake, real, kid_subsets=20)["inception_kid_std"] > 0
    whole = scores_from_features(fake, real, kid_subsets=20, kid_size=60)
    assert whole["inception_kid_std"] < 1e-12  # every subset the same


def test_real_features_cached_per_data_n_and_weights(random_inception_file, tmp_path, monkeypatch,
                                                     one_thread):
    """The test set's features are computed once: a second reference on the same (data, n,
    weights) reads the cache (and scores the same); other data or other weights do not."""
    from flatgen.metrics import inception

    path, _ = random_inception_file
    monkeypatch.setenv("FLATGEN_CACHE_DIR", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    fake = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    first = inception.InceptionReference(path, real)
    assert not first.from_cache and first.cache_file.is_file()
    calls = []
    original = inception.extract
    monkeypatch.setattr(inception, "extract", lambda x, *a, **k: calls.append(len(x))
                        or original(x, *a, **k))
    again = inception.InceptionReference(path, real)
    assert again.from_cache and calls == []  # no pass over the real images
    assert torch.equal(again.real_features, first.real_features)
    assert again(fake) == first(fake)
    assert not inception.InceptionReference(path, real[:5]).from_cache  # another n
    assert not inception.InceptionReference(path, real.flip(0)).from_cache  # other data
    other = tmp_path / "other.safetensors"
    state = inception.load_state(path)
    state[next(iter(state))] = state[next(iter(state))] + 1
    save_file(state, str(other))
    assert not inception.InceptionReference(other, real).from_cache  # other weights
    protocol = first.protocol(6)
    assert protocol["reference"] == "test split" and protocol["n_reference"] == 6
    assert protocol["kid_subset_size"] == 3 and protocol["weights_sha256"] == first.weights_sha256
