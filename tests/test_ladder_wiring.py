"""run_robustness_suite scores RGB ladders as ladder_quality chooses, and says when it
cannot rank them."""
import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule
from flatgen.metrics import CANNOT_RANK
from flatgen.robustness import run_robustness_suite
from flatgen.robustness.settings import RobustnessSettings


class _Tiny(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * (t.float().view(-1, 1, 1, 1) / 100)


def _run(channels, size, **kw):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(16, channels, size, size, generator=g) * 2 - 1
    floor = torch.rand(16, channels, size, size, generator=g) * 2 - 1
    settings = RobustnessSettings(n_samples=8, steps=[2, 4], samplers=["ddim"], eval_steps=4, **kw)
    return run_robustness_suite({"raw": _Tiny(channels)}, NoiseSchedule("linear", 100), ref,
                                floor_reference=floor, suites=["steps"], settings=settings,
                                progress=False)


def test_rgb_without_inception_says_pixel_w2_cannot_rank(one_thread):
    res = _run(3, 8)
    assert res["metric"] == "w2" and res["metric_note"] == CANNOT_RANK
    records = list(res["ladders"]["raw"].values())
    assert records and all(r["extra"]["metric_note"] == CANNOT_RANK for r in records)


def test_digits_keep_digits_fid_without_a_note(one_thread):
    res = _run(1, 8)
    assert res["metric"] == "digits_fid" and res["metric_note"] is None
    assert all("metric_note" not in r["extra"] for r in res["ladders"]["raw"].values())
