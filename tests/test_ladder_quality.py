"""The robustness ladders' score: Inception FID on RGB data when the FID Inception's weights
are given, pixel W2 marked "pixel W2: cannot rank" when not, digits-FID on digits, W2 on vector
data. The Inception is a small feature network standing in through InceptionReference's
`features`, and once the FID Inception architecture with random weights from a local file."""

import pytest
import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.metrics import CANNOT_RANK, ladder_quality, metric_note, quality_report
from flatgen.metrics.inception import (
    InceptionReference,
    scores_from_features,
)
from flatgen.robustness import run_robustness_suite
from flatgen.robustness.settings import RobustnessSettings


def _images(n, channels=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


def _stand_in():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6)).eval()


def test_rgb_ladders_score_with_inception_fid_when_given(one_thread):
    ref, floor, fake = _images(20, seed=0), _images(12, seed=1), _images(10, seed=2)
    features = _stand_in()
    inception = InceptionReference(None, ref, features=features)
    chosen = ladder_quality(ref, floor, inception=inception)
    assert chosen.metric == "inception_fid" and chosen.note is None
    q = chosen.fn(fake)
    with torch.no_grad():
        f_ref, f_fake, f_floor = features(ref).double(), features(fake).double(), \
            features(floor[:10]).double()
    assert q["inception_fid"] == pytest.approx(
        scores_from_features(f_fake, f_ref)["inception_fid"], rel=1e-9)
    # the floor: the same metric on the train draw of the same size
    assert q["inception_fid_floor"] == pytest.approx(
        scores_from_features(f_floor, f_ref)["inception_fid"], rel=1e-9)
    assert q["w2"] == pytest.approx(quality_report(fake, ref, None)["w2"])  # W2 still reported
    assert chosen.fn(fake) == q  # the floor is computed once per sample count


def test_without_weights_pixel_w2_says_it_cannot_rank():
    ref, floor = _images(16, seed=0), _images(16, seed=1)
    rgb = ladder_quality(ref, floor)
    assert (rgb.metric, rgb.note) == ("w2", CANNOT_RANK) == ("w2", "pixel W2: cannot rank")
    gray = ladder_quality(_images(16, 1, 16), _images(16, 1, 16, seed=1),
                          inception=lambda x: pytest.fail("Inception scores RGB only"))
    assert (gray.metric, gray.note) == ("w2", CANNOT_RANK)
    digits = ladder_quality(_images(16, 1, 8), _images(16, 1, 8, seed=1))
    assert (digits.metric, digits.note) == ("digits_fid", None)
    points = ladder_quality(torch.randn(16, 2), torch.randn(16, 2))
    assert (points.metric, points.note) == ("w2", None)
    assert "digits_fid" in digits.fn(_images(8, 1, 8, seed=2))
    # any ladder on images scored with W2 says so (a user's metric too); other scores do not
    assert metric_note(_images(4, 1, 8), "w2") == CANNOT_RANK
    assert metric_note(_images(4), "inception_fid") is None
    assert metric_note(torch.randn(4, 2), "w2") is None


def test_named_weights_file_scores_rgb_ladders(random_inception_file, tmp_path, monkeypatch,
                                               one_thread):
    monkeypatch.setenv("FLATGEN_CACHE_DIR", str(tmp_path / "cache"))
    ref, floor, fake = _images(6, seed=0), _images(4, seed=1), _images(4, seed=2)
    chosen = ladder_quality(ref, floor, inception_weights=random_inception_file[0])
    assert chosen.metric == "inception_fid" and chosen.note is None
    q = chosen.fn(fake)
    assert q["inception_fid"] > 0 and q["inception_fid_floor"] > 0
    gray = ladder_quality(_images(6, 1, 16), _images(4, 1, 16, seed=1),
                          inception_weights=random_inception_file[0])
    assert gray.metric == "w2"  # as evaluate: the FID Inception scores RGB images only


class _TinyRGB(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (t.float().view(-1, 1, 1, 1) / 100)


def test_rgb_steps_ladder_reads_inception_fid(one_thread):
    """Through the suites: the steps ladder of an RGB model records Inception FID."""
    torch.manual_seed(0)
    ref, floor = _images(24, seed=0), _images(24, seed=1)
    chosen = ladder_quality(ref, floor, inception=InceptionReference(None, ref,
                                                                     features=_stand_in()))
    settings = RobustnessSettings(n_samples=12, steps=[2, 4], samplers=["ddim"], eval_steps=4)
    res = run_robustness_suite({"raw": _TinyRGB()}, NoiseSchedule("linear", 100), ref,
                               floor_reference=floor, suites=["steps"],
                               settings=settings.model_copy(update={"metric": chosen.metric}),
                               quality_fn=chosen.fn, progress=False)
    assert res["metric"] == "inception_fid"
    records = list(res["ladders"]["raw"].values())
    assert records and all(r["metric"] == "inception_fid" for r in records)
    assert all(v > 0 for r in records for v in [r["clean"], *r["values"]])
