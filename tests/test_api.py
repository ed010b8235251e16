"""The Python API: any module returning a tensor or a diffusers output, one-call sharpness and
robustness on (model, schedule, data), flatgen.open_model(path), and the README's snippet."""

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from flatgen import api
from flatgen.models import UNetDenoiser

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return next(b for b in blocks if "UNet2DModel" in b)


def test_readme_snippet_runs_on_a_raw_unet(one_thread):
    code = _readme_snippet()
    assert len([line for line in code.splitlines() if line.strip()]) <= 16
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    sharp, ladders = scope["sharp"], scope["ladders"]
    assert math.isfinite(sharp["lambda_max"]) and sharp["lambda_max"] > 0
    assert set(ladders["summary"]) == {"model"} and "steps" in ladders
    assert out.getvalue().strip()
    # the raw UNet gives the numbers flatgen's own wrapper of it gives
    unet, sched, images = scope["unet"], scope["scheduler"], scope["images"]
    wrapped = api.sharpness(UNetDenoiser(unet), sched, images, batch=16, top_k=1, trace=False)
    assert wrapped["lambda_max"] == pytest.approx(sharp["lambda_max"], rel=1e-6)
    assert wrapped["loss"] == pytest.approx(sharp["loss"], rel=1e-6)


def test_denoiser_reads_tensor_sample_and_tuple_outputs():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       layers_per_block=1, norm_num_groups=4).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 70])
    expected = unet(x, t).sample
    assert torch.equal(api.as_denoiser(unet)(x, t), expected)

    class TupleOut(torch.nn.Module):
        def forward(self, x, t):
            return unet(x, t, return_dict=False)

    assert torch.equal(api.as_denoiser(TupleOut())(x, t), expected)
    with pytest.raises(TypeError, match="nn.Module"):
        api.as_denoiser(lambda x, t: x)


class _DictOut(torch.nn.Module):
    def forward(self, x, t):
        return {"eps": x}


def test_dict_output_is_refused():
    with pytest.raises(TypeError, match="returned a dict"):
        api.as_denoiser(_DictOut())(torch.zeros(1, 2), torch.zeros(1))


def test_schedule_forms_agree():
    sched = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    a, b = api.as_schedule(sched), api.as_schedule(dict(sched.config))
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod) and api.as_schedule(a) is a
    assert a.pipeline is not None  # sampled on the scheduler's own chain


def test_open_model_is_callable_and_needs_no_out(tmp_path, one_thread):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       layers_per_block=1, norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(
        tmp_path / "pipe")
    import flatgen.open_model  # noqa: F401 - the submodule import binds the name; still callable

    run = flatgen.open_model(tmp_path / "pipe")
    assert run.sample_shape() == (1, 8, 8) and run.schedule.pipeline is not None
    with pytest.raises(ValueError, match="open_model\\(path, data=") as err:
        run.data()
    assert "\n" not in str(err.value)
    run = flatgen.open_model(tmp_path / "pipe", data="digits")
    assert run.data()[0].shape[1:] == (1, 8, 8)
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([1, 2])
    assert torch.allclose(run.model()(x, t), unet.eval()(x, t).sample, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # nothing written
