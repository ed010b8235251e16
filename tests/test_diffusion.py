import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from flatgen.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    fixed_diffusion_loss_fn,
    generate,
    sample,
)
from flatgen.models import build_model


def test_schedule_matches_diffusers():
    for kind, name in [("linear", "linear"), ("cosine", "squaredcos_cap_v2")]:
        s = NoiseSchedule(kind)
        ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
        x0, noise = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
        t = torch.tensor([0, 1, 10, 500, 998, 999])
        assert torch.allclose(s.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6)


def test_respacing():
    s = NoiseSchedule()
    assert s.respaced(1000) == list(range(1000))
    ts = s.respaced(20)
    assert len(ts) == 20 and ts[0] == 0 and ts[-1] == 999 and ts == sorted(ts)
    with pytest.raises(ValueError):
        s.respaced(0)


class ExactGMMDenoiser(nn.Module):
    """The exact eps-predictor for an equal-weight mixture of N(mu_k, s^2 I)."""

    def __init__(self, means: torch.Tensor, s: float, schedule: NoiseSchedule):
        super().__init__()
        self.means, self.s2 = means.double(), s**2
        self.abar = schedule.alphas_cumprod
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the sampler a device and dtype

    def forward(self, x, t):
        a = self.abar[t].view(-1, 1)
        x = x.double()
        v = a * self.s2 + 1 - a
        diff = x[:, None, :] - a.sqrt()[:, None] * self.means[None]  # n x K x d
        logw = -(diff**2).sum(-1) / (2 * v)
        w = torch.softmax(logw, dim=1)
        x0_k = self.means[None] + (a.sqrt() * self.s2 / v)[:, None] * diff
        x0 = (w[..., None] * x0_k).sum(1)
        return ((x - a.sqrt() * x0) / (1 - a).sqrt()).float()


@pytest.mark.parametrize("sampler,steps", [("adm", 250), ("ddim", 50)])
def test_exact_denoiser_gaussian_recovers_variance(sampler, steps):
    """With the exact denoiser of N(0, s^2 I), the samplers produce N(0, s^2 I).

    DDIM is exact for Gaussian data at any T'; the ancestral sampler with the fixed (posterior)
    variance is exact only as T' -> T (with few steps it under-disperses: exposure bias).
    """
    sched, s = NoiseSchedule(), 0.5
    model = ExactGMMDenoiser(torch.zeros(1, 2), s, sched)
    x = sample(model, sched, (4000, 2), steps=steps, sampler=sampler,
               generator=torch.Generator().manual_seed(0), clip=False)
    assert abs(x.std().item() - s) < 0.03 and x.mean().abs().max() < 0.05


def test_vector_data_is_not_clipped_to_the_image_box():
    """toy2d lives outside [-1, 1]: by default only image samples (N, C, H, W) have x0 clipped."""
    sched, s = NoiseSchedule(), 2.0
    model = ExactGMMDenoiser(torch.zeros(1, 2), s, sched)
    x = sample(model, sched, (4000, 2), steps=50, sampler="ddim",
               generator=torch.Generator().manual_seed(0))
    assert abs(x.std().item() - s) < 0.1 and x.abs().max() > 4
    clipped = sample(model, sched, (4000, 2), steps=50, sampler="ddim",
                     generator=torch.Generator().manual_seed(0), clip=True)
    assert clipped.abs().max() <= 1 + 1e-6


def test_adm_sampler_under_disperses_with_few_steps():
    """The fixed posterior variance misses the x0 uncertainty: fewer steps, smaller spread."""
    sched = NoiseSchedule()
    model = ExactGMMDenoiser(torch.zeros(1, 2), 0.5, sched)
    stds = [sample(model, sched, (4000, 2), steps=k, sampler="adm",
                   generator=torch.Generator().manual_seed(0),
                   clip=False).std().item() for k in (10, 50, 250)]
    assert stds[0] < stds[1] < stds[2] < 0.5


def test_more_steps_not_worse_with_exact_denoiser():
    """On a 2-D mixture, T'=100 lands closer to the data than T'=10 (discretization error)."""
    import ot

    sched = NoiseSchedule()
    angles = torch.arange(8) * 2 * math.pi / 8
    means = 0.7 * torch.stack([angles.cos(), angles.sin()], 1)
    model = ExactGMMDenoiser(means, 0.05, sched)
    g = torch.Generator().manual_seed(1)
    data = (means[torch.randint(8, (1000,), generator=g)]
            + 0.05 * torch.randn(1000, 2, generator=g)).double()

    def w2(x):
        return math.sqrt(ot.emd2([], [], ot.dist(x.double(), data)))

    for sampler in ("adm", "ddim"):
        few = generate(model, sched, n=1000, shape=(2,), steps=10, sampler=sampler, seed=2)
        many = generate(model, sched, n=1000, shape=(2,), steps=100, sampler=sampler, seed=2)
        assert w2(many) < w2(few), sampler


def test_sampling_is_seeded_and_batch_independent():
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,))
    sched = NoiseSchedule()
    a = generate(model, sched, n=10, shape=(2,), steps=5, sampler="adm", seed=3, batch_size=10)
    b = generate(model, sched, n=10, shape=(2,), steps=5, sampler="adm", seed=3, batch_size=10)
    c = generate(model, sched, n=10, shape=(2,), steps=5, sampler="adm", seed=4, batch_size=10)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loss_input_perturbation_changes_input_only():
    sched = NoiseSchedule()
    seen = {}

    class Probe(nn.Module):
        def forward(self, x, t):
            seen["x"] = x
            return torch.zeros_like(x)

    x0, noise, xi = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    t = torch.tensor([10, 200, 500, 900])
    loss = diffusion_loss(Probe(), x0, sched, t=t, noise=noise, ip_gamma=0.1, ip_noise=xi)
    assert torch.allclose(seen["x"], sched.add_noise(x0, noise + 0.1 * xi, t))
    assert torch.allclose(loss, noise.pow(2).mean())  # the target stays the original noise


def test_fixed_loss_is_deterministic():
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,))
    x0 = torch.randn(16, 2)
    f = fixed_diffusion_loss_fn(x0, NoiseSchedule(), draws=2, seed=0)
    assert f(model).item() == f(model).item()
    assert (f(model).item()
            != fixed_diffusion_loss_fn(x0, NoiseSchedule(), draws=2, seed=1)(model).item())


def test_unet_preset_shapes():
    model = build_model("unet-digits", (1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    assert model(x, torch.tensor([0, 500, 999])).shape == x.shape
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("vit", (1, 8, 8))
