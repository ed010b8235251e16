"""The robustness suites measure the chain a diffusers model's pipeline runs: the x_T attack
differentiates through the scheduler's own DDIM chain, and the exposure metrics walk the
sampler's chain, as `sample` does (a tiny pipeline built here, nothing downloaded)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel

from flatgen.diffusion import NoiseSchedule, as_epsilon_model, sample
from flatgen.diffusion.samplers import sampler_chain
from flatgen.models import UNetDenoiser
from flatgen.robustness.attack_noise import attack_initial_noise_ladders, xT_attack_rows
from flatgen.robustness.exposure import epsilon_norm_gap, variance_error
from flatgen.robustness.record import pgd_settings

SHAPE = (3, 1, 8, 8)


def _unet():
    torch.manual_seed(1)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=4).eval()


@pytest.mark.parametrize("changes", [
    {},  # diffusers' defaults: "leading" spacing, set_alpha_to_one, epsilon
    {"steps_offset": 1, "prediction_type": "v_prediction", "set_alpha_to_one": False},
])
def test_xT_attack_clean_sample_is_the_pipelines(one_thread, changes):  # noqa: N802 - x_T
    unet, steps, seed = _unet(), 5, 11
    sched = DDIMScheduler(num_train_timesteps=1000, **changes)
    schedule = NoiseSchedule.from_scheduler_config(sched.config)
    net = UNetDenoiser(unet)
    model = as_epsilon_model(net, schedule)  # what the suites hold: the eps view
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    attack = pgd_settings(norm="linf", steps=2, restarts=1, step_factor=2.5, zero_first=False)
    rows = xT_attack_rows(model, schedule, {"main": x_T}, levels=[0.5], attack=attack,
                          chain={"steps": steps, "clip": None}, seed=0, batch_size=8)
    clean, attacked = rows["main"]["clean"], rows["main"]["attacked"][0]
    # the unattacked sample is flatgen's sample at the same seed, on the pipeline's chain
    ours = sample(net, schedule, SHAPE, steps=steps, sampler="ddim",
                  generator=torch.Generator().manual_seed(seed))
    assert torch.equal(clean, ours)
    pipe = DDIMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=SHAPE[0], generator=torch.Generator().manual_seed(seed),
                  num_inference_steps=steps, eta=0.0, output_type="np").images
    mine = (clean / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(mine - theirs).max() < 1e-5
    # not flatgen's respaced chain, which the attack walked before
    respaced = sample(net, schedule, SHAPE, steps=steps, sampler="ddim-respaced",
                      generator=torch.Generator().manual_seed(seed))
    assert (respaced - clean).abs().max() > 1e-3
    # PGD moved the samples: gradients flow through the scheduler's own step()
    assert (attacked - clean).abs().max() > 1e-4
    ladders = attack_initial_noise_ladders(model, schedule, x_T, eps_list=[0.5], steps=2,
                                           quality=lambda x: float(x.pow(2).mean()),
                                           sampling_steps=steps, seed=0)
    assert ladders["quality"]["clean"] == pytest.approx(float(ours.pow(2).mean()), rel=1e-6)


def test_exposure_metrics_walk_the_pipelines_chain(one_thread):
    sched = DDPMScheduler(num_train_timesteps=1000, steps_offset=1)  # "leading": 801, 601, ...
    schedule = NoiseSchedule.from_scheduler_config(sched.config)
    model = UNetDenoiser(_unet())
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    chain = sorted(t for t, _ in sampler_chain(schedule, 5, "adm"))
    assert chain == [1, 201, 401, 601, 801]
    gap = epsilon_norm_gap(model, schedule, x0, steps=5, sampler="adm", seed=0)
    assert gap["l2"]["t"] == chain
    for hop, expected in ((1, chain[:-1]), (2, chain[:-2]), (None, chain[:-1])):
        res = variance_error(model, schedule, x0, steps=5, sampler="adm", hop=hop, seed=0)
        assert res["t"] == expected
    # the -respaced name keeps flatgen's chain
    res = variance_error(model, schedule, x0, steps=5, sampler="adm-respaced", hop=1, seed=0)
    assert res["t"] == NoiseSchedule("linear", 1000).respaced(5)[:-1]
