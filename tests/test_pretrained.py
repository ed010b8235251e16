"""Bring your own model: diffusers schedules, pipelines in every analysis command, fine-tuning,
and the round trip to diffusers' DDPM / DDIM pipelines. Every pipeline is built here, tiny."""

import json

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from typer.testing import CliRunner

from flatgen.cli import app
from flatgen.config import ConfigError, build_config, config_changes, load_config
from flatgen.diffusion import NoiseSchedule, diffusion_loss, sample
from flatgen.diffusion.samplers import denoise_chain
from flatgen.models import UNetDenoiser

runner = CliRunner()


def _tiny_unet(seed=0, channels=1, size=8):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=4)


@pytest.fixture
def pipeline_dir(tmp_path, one_thread):
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.001,
                          beta_end=0.03, prediction_type="v_prediction")
    path = tmp_path / "pipe"
    DDPMPipeline(unet=_tiny_unet(), scheduler=sched).save_pretrained(path)
    return path


def _snapshot(path):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("beta,start,end", [("linear", 1e-4, 0.02), ("linear", 5e-4, 0.01),
                                            ("scaled_linear", 8.5e-4, 0.012),
                                            ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_schedule_from_scheduler_config_matches_diffusers(beta, start, end):
    ref = DDPMScheduler(num_train_timesteps=500, beta_schedule=beta, beta_start=start, beta_end=end)
    s = NoiseSchedule.from_scheduler_config(ref.config)
    assert s.timesteps == 500
    assert torch.allclose(s.alphas_cumprod.float(), ref.alphas_cumprod, atol=1e-7)
    x0, noise, t = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4), torch.tensor([0, 7, 250, 499])
    assert torch.allclose(s.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6)


@pytest.mark.parametrize("change,word", [
    ({"beta_schedule": "sigmoid"}, "sigmoid"), ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"variance_type": "learned_range"}, "learned_range"), ({"thresholding": True}, "thresholding"),
    ({"prediction_type": "flow"}, "flow"), ({"rescale_betas_zero_snr": True}, "zero_snr"),
])
def test_unsupported_scheduler_is_refused_in_one_line(change, word):
    cfg = dict(DDPMScheduler().config) | change
    with pytest.raises(ValueError, match=word) as err:
        NoiseSchedule.from_scheduler_config(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_targets_and_eps_conversion_invert(prediction):
    s = NoiseSchedule("cosine", 1000, prediction_type=prediction)
    x0, eps = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.tensor([0, 3, 400, 900, 999])
    x_t = s.add_noise(x0, eps, t)
    target = s.target(x0, eps, t)
    assert torch.allclose(s.eps_from_output(target, x_t, t), eps, atol=1e-4)
    # the v target by its definition, against diffusers' get_velocity
    if prediction == "v_prediction":
        ref = s.scheduler.get_velocity(x0, eps, t)
        assert torch.allclose(target, ref, atol=1e-6)


class _ExactGaussian(torch.nn.Module):
    """The exact predictor for data N(0, s^2 I), in eps, v or x0 form."""

    def __init__(self, schedule, var=0.25):
        super().__init__()
        self.s, self.var = schedule, var
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        a = self.s.alphas_cumprod[t].view(-1, *([1] * (x.ndim - 1))).float()
        eps = (1 - a).sqrt() * x / (a * self.var + 1 - a)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        kind = self.s.prediction_type
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        return eps if kind == "epsilon" else x0 if kind == "sample" else v


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
@pytest.mark.parametrize("sampler", ["adm", "ddim"])
def test_samplers_honour_prediction_type(prediction, sampler):
    """The same exact denoiser, written as eps, v or x0, samples the same points."""
    ref_s = NoiseSchedule("linear", 200)
    s = NoiseSchedule("linear", 200, prediction_type=prediction)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = sample(_ExactGaussian(ref_s), ref_s, (256, 2), steps=20, sampler=sampler,
                 generator=gen(), clip=False)
    got = sample(_ExactGaussian(s), s, (256, 2), steps=20, sampler=sampler, generator=gen(),
                 clip=False)
    assert torch.allclose(got, ref, atol=1e-4)
    assert abs(float(got.var()) - 0.25) < 0.06  # and it is the data distribution


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_loss_targets_the_prediction_type(prediction):
    s = NoiseSchedule("linear", 200, prediction_type=prediction)
    exact = _ExactGaussian(s)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 2, generator=g) * 0.5
    noise = torch.randn(4000, 2, generator=g)
    t = torch.randint(0, 200, (4000,), generator=g)
    loss = diffusion_loss(exact, x0, s, t=t, noise=noise).item()
    # the exact posterior mean attains the Bayes error; a model predicting 0 does worse
    zero = diffusion_loss(lambda x, tt: torch.zeros_like(x), x0, s, t=t, noise=noise).item()
    assert loss < 0.8 * zero


# ---------------------------------------------------------------- round trip to diffusers


def _unet_model():
    return UNetDenoiser(_tiny_unet(seed=1)).eval()


def test_ddpm_pipeline_reproduces_adm_sampler(one_thread):
    """export's scheduler config (timestep_spacing linspace) walks flatgen's respaced chain."""
    schedule = NoiseSchedule("linear", 1000)
    model = _unet_model()
    ours = sample(model, schedule, (2, 1, 8, 8), steps=20, sampler="adm",
                  generator=torch.Generator().manual_seed(7))
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()

    def theirs(spacing):
        sched = DDPMScheduler.from_config(schedule.scheduler_config(), timestep_spacing=spacing)
        pipe = DDPMPipeline(unet=model.unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=2, generator=torch.Generator().manual_seed(7),
                    num_inference_steps=20, output_type="np").images

    assert schedule.scheduler_config()["timestep_spacing"] == "linspace"
    assert np.abs(theirs("linspace") - ours).max() < 1e-5
    assert np.abs(theirs("leading") - ours).max() > 1e-3  # diffusers' default chain differs


def test_ddim_agrees_on_diffusers_chain(one_thread):
    """DDIMScheduler steps t -> t - T/N; on its own "leading" chain flatgen's DDIM update agrees."""
    schedule = NoiseSchedule("cosine", 1000)
    model = _unet_model()
    sched = DDIMScheduler.from_config(schedule.scheduler_config(), timestep_spacing="leading",
                                      set_alpha_to_one=True)
    pipe = DDIMPipeline(unet=model.unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=10,
                  eta=0.0, use_clipped_model_output=True, output_type="np").images
    chain = sorted(int(t) for t in pipe.scheduler.timesteps)  # the pipeline copies its scheduler
    assert chain == list(range(0, 1000, 100))
    x_T = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = denoise_chain(model, schedule, x_T, ts=chain, sampler="ddim")
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(theirs - ours).max() < 1e-5


# ---------------------------------------------------------------- analysis commands


def test_analysis_commands_read_a_pipeline_and_write_only_to_out(pipeline_dir, tmp_path):
    before = _snapshot(pipeline_dir)
    out = tmp_path / "analysis"
    common = ["--data", "digits", "--out", str(out)]
    runs = [
        ["sample", pipeline_dir, "--steps", "3", "--n", "4", "--data", "digits", "--out",
         out / "s.png"],
        ["evaluate", pipeline_dir, "--steps", "3", "--n", "8", "--sampler", "adm", *common],
        ["sharpness", pipeline_dir, "--top-k", "1", "--no-trace", "--rhos", "0.01", "--sigmas",
         "0.01", "--batch", "8", *common],
        ["landscape", pipeline_dir, "--dim", "1", "--grid", "3", "--batch", "8", *common],
        ["robustness", pipeline_dir, "--suite", "quant", "--n", "8", "--set", "robustness.bits=[8]",
         "--set", "robustness.granularity=[tensor]", "--set", "robustness.eval_steps=2",
         "--set", "robustness.quant_schemes=[w]", *common],
    ]
    for args in runs:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, (args[0], result.output)
    assert _snapshot(pipeline_dir) == before  # nothing written into the user's folder
    names = {p.name for p in out.iterdir()}
    assert {"s.png", "quality.json", "sharpness.json", "landscape.npz", "robustness.json"} <= names
    quality = json.loads((out / "quality.json").read_text())
    assert quality["results"][0]["steps"] == 3 and "digits_fid" in quality["results"][0]
    # the chain measured is the pipeline's own (DDPMScheduler's default "leading"), and named
    chain = quality["results"][0]["chain"]
    assert chain == "DDPMScheduler timestep_spacing=leading steps_offset=0"
    assert quality["protocol"]["reference"] == "test split" and quality["protocol"]["n"] == 8


@pytest.mark.parametrize("args,word", [
    (["--data", "digits"], "--out"), (["--out", "OUT"], "--data"),
    (["--data", "nowhere/at/all", "--out", "OUT"], "--data"),
])
def test_pipeline_without_data_or_out_is_one_line(pipeline_dir, tmp_path, args, word):
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    result = runner.invoke(app, ["sharpness", str(pipeline_dir), *args])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and word in result.output


def test_out_inside_the_model_dir_is_refused(pipeline_dir):
    result = runner.invoke(app, ["sharpness", str(pipeline_dir), "--data", "digits",
                                 "--out", str(pipeline_dir / "eval")])
    assert result.exit_code == 2 and "inside the model directory" in result.output


def test_class_conditional_unet_is_refused(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=4, num_class_embeds=10)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "p")
    result = runner.invoke(app, ["sharpness", str(tmp_path / "p"), "--data", "digits",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "class-conditional" in result.output


def test_unet_directory_with_scheduler_beside_it(pipeline_dir, tmp_path):
    """A bare UNet directory reads the scheduler of its pipeline (../scheduler)."""
    from flatgen.open_model import open_model

    run = open_model(pipeline_dir / "unet", data="digits", out=tmp_path / "o")
    assert run.schedule.prediction_type == "v_prediction" and run.schedule.kind == "scaled_linear"
    assert run.sample_shape() == (1, 8, 8)


# ---------------------------------------------------------------- fine-tuning


def test_fine_tune_a_pipeline_with_sam(pipeline_dir, tmp_path):
    from flatgen.train import load_run, train
    from flatgen.train.checkpoint import load_weights

    cfg = build_config({"data": {"name": "digits"}, "model": {"pretrained": str(pipeline_dir)},
                        "method": {"preset": "sam+ema"},
                        "train": {"steps": 2, "batch_size": 8, "warmup_steps": 0, "lr": 1e-3}})
    # the diffusion section comes from the pipeline's scheduler
    assert (cfg.diffusion.schedule, cfg.diffusion.timesteps) == ("scaled_linear", 100)
    assert cfg.diffusion.prediction_type == "v_prediction" and cfg.diffusion.beta_end == 0.03
    before = _snapshot(pipeline_dir)
    train(cfg, tmp_path / "ft", progress=False)
    assert _snapshot(pipeline_dir) == before
    run = load_run(tmp_path / "ft")
    start = UNet2DModel.from_pretrained(pipeline_dir / "unet").state_dict()
    tuned = load_weights(run.ckpt, "model")
    moved = max((tuned[f"unet.{k}"] - v).abs().max().item() for k, v in start.items())
    assert 0 < moved < 0.1  # started from the pretrained weights, and SAM moved them
    assert set(run.available_weights()) == {"raw", "ema"}
    # a saved config reloads to the same config (a study or --resume can reuse the run)
    assert config_changes(load_config(tmp_path / "ft" / "config.yaml").model_dump(mode="json"),
                          cfg.model_dump(mode="json")) == []


def test_pretrained_config_contradiction_is_refused(pipeline_dir):
    with pytest.raises(ConfigError, match="diffusion.schedule"):
        build_config({"model": {"pretrained": str(pipeline_dir)},
                      "diffusion": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="model.pretrained"):
        build_config({"model": {"pretrained": str(pipeline_dir / "missing")}})


# ---------------------------------------------------------------- compatibility, version


def test_config_saved_with_old_defaults_still_matches(tmp_path):
    """Runs saved before mixed_precision defaulted to Accelerate's setting stay reusable."""
    from flatgen.study import StudyConfig, plan_units
    from flatgen.study.config import unit_config
    from flatgen.study.run import check_run_config

    study = StudyConfig.model_validate({"methods": ["adm"]})
    unit = plan_units(study)[0]
    new = unit_config(study, unit.base, unit.seed)
    old = new.model_dump(mode="json")
    old["train"]["mixed_precision"] = "no"
    for key in ("beta_start", "beta_end", "prediction_type"):
        del old["diffusion"][key]  # written before these fields existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_run_config(tmp_path, study, unit)  # no RunDirError
    saved = load_config(tmp_path / "config.yaml").model_dump(mode="json")
    assert config_changes(saved, new.model_dump(mode="json")) == []
    assert config_changes(saved, build_config({}, ["train.lr=0.5"]).model_dump(mode="json"))


def test_version():
    from flatgen import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"flatgen {__version__}"


def test_pickled_bin_weights_are_refused_in_one_line(tmp_path):
    """diffusers would unpickle a .bin when no safetensors is there; flatgen refuses first."""
    _tiny_unet().save_pretrained(tmp_path / "unet", safe_serialization=False)
    DDPMScheduler().save_pretrained(tmp_path / "unet")
    assert not list((tmp_path / "unet").glob("*.safetensors"))
    result = runner.invoke(app, ["sharpness", str(tmp_path / "unet"), "--data", "digits",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert ".bin" in result.output and "save_pretrained" in result.output
    assert not (tmp_path / "o").exists()


def test_sample_needs_no_data_for_a_pipeline(pipeline_dir, tmp_path):
    """Sampling a diffusers directory needs only the model's shape: no --data; the grid equals
    the one sampled with --data digits at the same seed."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    base = ["sample", str(pipeline_dir), "--steps", "3", "--n", "4", "--seed", "3"]
    assert runner.invoke(app, [*base, "--out", str(a)]).exit_code == 0
    assert runner.invoke(app, [*base, "--data", "digits", "--out", str(b)]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("args,message", [
    ([], "name the PNG file with --out"),
    (["--out", "OUT/grid.jpg"], "sample writes a PNG; name the file *.png"),
])
def test_sample_refuses_what_it_cannot_write(pipeline_dir, tmp_path, args, message):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    before = _snapshot(pipeline_dir)
    result = runner.invoke(app, ["sample", str(pipeline_dir), "--steps", "2", *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists() and _snapshot(pipeline_dir) == before
