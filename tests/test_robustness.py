"""Tests for flatgen.robustness: quantizer vs torch fake-quant, exposure
metrics on an exact Gaussian denoiser, determinism and JSON-ready suite output."""

from __future__ import annotations

import json
import math

import numpy as np
import ot
import pytest
import torch
from torch import nn

from flatgen.diffusion import NoiseSchedule, sample
from flatgen.models import build_model
from flatgen.robustness import (
    RobustnessSettings,
    denoise_chain,
    epsilon_norm_gap,
    model_size_bytes,
    plot_robustness,
    quantize_activations,
    quantize_weights,
    run_robustness_suite,
    variance_error,
)
from flatgen.robustness.suites.steps import StepsSettings

SCHEDULE = NoiseSchedule("linear", 1000)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these tensors are tiny: a second thread only adds synchronization, which on a shared,
    # oversubscribed machine costs 10x or more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.SiLU(),
        nn.ConvTranspose2d(4, 3, 2, stride=2),
        nn.Flatten(),
        nn.Linear(3 * 8 * 8, 5),
    )


# ---------------------------------------------------------------- quantization


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantizer_matches_torch_fake_quantize_and_copies(bits: int, granularity: str) -> None:
    model = small_convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantize_weights(model, bits, granularity)
    qmax = 2 ** (bits - 1) - 1
    for (name, m), (_, qm) in zip(model.named_modules(), qmodel.named_modules(), strict=True):
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        w = m.weight.detach()
        axis = 1 if isinstance(m, nn.ConvTranspose2d) else 0
        if granularity == "tensor":
            scale = w.abs().max().item() / qmax
            expected = torch.fake_quantize_per_tensor_affine(w, scale, 0, -qmax, qmax)
        else:
            dims = [d for d in range(w.ndim) if d != axis]
            scales = (w.abs().amax(dim=dims) / qmax).float()
            zeros = torch.zeros_like(scales, dtype=torch.int32)
            expected = torch.fake_quantize_per_channel_affine(w, scales, zeros, axis, -qmax, qmax)
        assert torch.equal(qm.weight, expected), name
        assert not torch.equal(qm.weight, w), name  # something was actually rounded
        assert torch.equal(qm.bias, m.bias)  # biases stay float
    # the original is untouched and shares no storage with the copy
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert qmodel is not model
    qp = {p.data_ptr() for p in qmodel.parameters()}
    assert not qp & {p.data_ptr() for p in model.parameters()}
    assert torch.equal(qmodel[1].weight, model[1].weight)  # norm params stay float


def test_model_size_bytes_by_hand() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))  # 12 weights; 3 + 6 others
    assert model_size_bytes(model)["bytes"] == 21 * 4
    # ceil(4 bits * 12 / 8) + 4 bytes per scale + 9 float32 others
    assert model_size_bytes(model, 4, "tensor")["bytes"] == 6 + 4 * 1 + 9 * 4
    assert model_size_bytes(model, 4, "channel")["bytes"] == 6 + 4 * 3 + 9 * 4
    assert model_size_bytes(model, 3, "channel")["bytes"] == math.ceil(36 / 8) + 12 + 36


def test_activation_quantization_puts_layer_inputs_on_the_grid() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 3))
    calib = [(torch.randn(64, 6) * s, torch.zeros(64)) for s in (0.5, 1.0, 2.0)]
    seen: list[torch.Tensor] = []

    def fwd(m: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return m(x)

    qmodel = quantize_activations(model, calib, bits=3, forward=fwd)
    qmodel[2].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    x = torch.randn(256, 6)
    with torch.no_grad():
        out_q = qmodel(x)
        out_f = model(x)
    assert seen and seen[0].unique().numel() <= 2**3  # the second layer's input: 8 levels
    assert not torch.equal(out_q, out_f)
    q8 = quantize_activations(model, calib, bits=8, forward=fwd)
    with torch.no_grad():
        err8 = (q8(x) - out_f).abs().mean()
    assert err8 < (out_q - out_f).abs().mean() / 4  # 8 bits is far closer than 3 bits
    assert len(model[2]._forward_pre_hooks) == 0  # the original got no hooks


# ---------------------------------------------------------------- exposure bias


class ExactGaussianDenoiser(nn.Module):
    """The MMSE noise predictor for x0 ~ N(0, s^2 I), optionally scaled (a miscalibrated one)."""

    def __init__(self, s: float, gain: float = 1.0):
        super().__init__()
        self.s, self.gain = s, gain
        self.dummy = nn.Parameter(torch.zeros(()))  # sample() reads device/dtype from here
        self.abar = SCHEDULE.alphas_cumprod.float()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, *([1] * (x.ndim - 1)))
        return self.gain * (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def _coef(a: float, ap: float, s: float, sampler: str) -> tuple[float, float]:
    """x_prev = coef * x_t + sqrt(var) * z for ExactGaussianDenoiser(s) with clip=False."""
    k0 = (1 - (1 - a) / (a * s * s + 1 - a)) / math.sqrt(a)  # x0_hat = k0 * x_t
    if sampler == "adm":
        beta = 1 - a / ap
        coef = beta * math.sqrt(ap) / (1 - a) * k0 + (1 - ap) * math.sqrt(1 - beta) / (1 - a)
        return coef, beta * (1 - ap) / (1 - a)
    return math.sqrt(ap) * k0 + math.sqrt(1 - ap) * (1 - math.sqrt(a) * k0) / math.sqrt(1 - a), 0.0


def gaussian_sigma_hat(s: float, steps: int, sampler: str, hop: int | None) -> dict[int, float]:
    """Closed-form sigma_hat_t for ExactGaussianDenoiser(s): both samplers are linear-Gaussian
    here, so the covariance of (x0, x) can be carried through the chain."""
    ab = SCHEDULE.alphas_cumprod.numpy()
    ts = SCHEDULE.respaced(steps)
    if hop is None:
        chains = [(len(ts) - 1, set(range(len(ts) - 1)))]
    else:
        chains = [(i + hop, {i}) for i in range(len(ts) - hop)]
    out = {}
    for top, record in chains:
        a = ab[ts[top]]
        vxx, vx0 = a * s * s + 1 - a, math.sqrt(a) * s * s
        for j in range(top, min(record), -1):
            coef, var = _coef(ab[ts[j]], ab[ts[j - 1]], s, sampler)
            vxx, vx0 = coef * coef * vxx + var, coef * vx0
            if j - 1 in record:
                at = ab[ts[j - 1]]
                out[ts[j - 1]] = math.sqrt(vxx - 2 * math.sqrt(at) * vx0 + at * s * s)
    return out


def gaussian_relative_gap(s: float, steps: int, sampler: str) -> dict[int, float]:
    """Closed-form (sampling - training) / training squared eps norm: Var(x_t) / v_t - 1."""
    ab = SCHEDULE.alphas_cumprod.numpy()
    ts = SCHEDULE.respaced(steps)
    out, var_x = {}, 1.0  # sampling starts from x_T ~ N(0, I)
    for j in range(len(ts) - 1, -1, -1):
        a = ab[ts[j]]
        out[ts[j]] = var_x / (a * s * s + 1 - a) - 1
        if j > 0:
            coef, var = _coef(a, ab[ts[j - 1]], s, sampler)
            var_x = coef * coef * var_x + var
    return out


@pytest.mark.parametrize("sampler", ["adm", "ddim"])
def test_exposure_metrics_vanish_for_the_exact_denoiser(sampler: str) -> None:
    # Data at a point (s -> 0 in the Gaussian formula): the exact denoiser predicts x0 without
    # error, so with clip=False both samplers reproduce the forward marginals at any T' and
    # both metrics are 0 up to sampling noise (~0.3% per timestep here). For s > 0 they are
    # not 0 at finite T' (the next test checks them against the closed form instead).
    n, d = 4000, 16
    x0 = torch.zeros(n, d)
    exact, off = ExactGaussianDenoiser(0.0), ExactGaussianDenoiser(0.0, gain=1 / 1.05)
    gap = epsilon_norm_gap(exact, SCHEDULE, x0, steps=20, sampler=sampler, clip=False,
                           batch_size=n)
    for form in ("l2", "sq"):
        rel = np.array(gap[form]["gap"]) / np.array(gap[form]["training"])
        np.testing.assert_allclose(rel, gap[form]["relative_gap"])
        assert len(rel) == 20 and np.abs(rel).max() < 0.05
        assert abs(gap[form]["relative_gap_mean"]) < 0.01
    for hop in (1, None):
        res = variance_error(exact, SCHEDULE, x0, steps=20, sampler=sampler, hop=hop, clip=False,
                             batch_size=n)
        assert len(res["t"]) == 19 and max(res["delta"]) < 1e-4
        ratio = np.array(res["sigma_hat"]) / np.array(res["sigma_target"])
        assert np.abs(ratio - 1).max() < 0.02  # relative: the target is 0.01 at t = 0
        # a denoiser 5% off in its noise estimate is far outside that tolerance
        bad = variance_error(off, SCHEDULE, x0, steps=20, sampler=sampler, hop=hop, clip=False,
                             batch_size=n)
        bad_ratio = np.array(bad["sigma_hat"]) / np.array(bad["sigma_target"])
        assert np.abs(bad_ratio - 1).max() > 0.2
    bad_gap = epsilon_norm_gap(off, SCHEDULE, x0, steps=20, sampler=sampler, clip=False,
                               batch_size=n)
    assert bad_gap["sq"]["relative_gap_mean"] > 0.1 and bad_gap["l2"]["relative_gap_mean"] > 0.04


@pytest.mark.parametrize(("steps", "sampler", "hop"), [(100, "adm", 5), (20, "ddim", None)])
def test_exposure_metrics_match_the_gaussian_closed_form(steps: int, sampler: str, hop) -> None:
    s, n, d = 0.5, 4000, 16
    x0 = s * torch.randn(n, d, generator=torch.Generator().manual_seed(2))
    model = ExactGaussianDenoiser(s)
    res = variance_error(model, SCHEDULE, x0, steps=steps, sampler=sampler, hop=hop, clip=False,
                         batch_size=n)
    expected = gaussian_sigma_hat(s, steps, sampler, hop)
    assert res["t"] == sorted(expected)
    np.testing.assert_allclose(res["sigma_hat"], [expected[t] for t in res["t"]], rtol=0.02)
    gap = epsilon_norm_gap(model, SCHEDULE, x0, steps=20, sampler=sampler, clip=False,
                           batch_size=n)
    rel = np.array(gap["sq"]["relative_gap"])
    expected_rel = gaussian_relative_gap(s, 20, sampler)
    np.testing.assert_allclose(rel, [expected_rel[t] for t in gap["sq"]["t"]], atol=0.03)
    assert min(expected_rel.values()) < -0.1  # the closed form is far from 0 here: a real check


@pytest.mark.parametrize("sampler", ["adm", "ddim"])
def test_denoise_chain_reproduces_sample(sampler: str) -> None:
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,)).eval()
    ref = sample(model, SCHEDULE, (16, 2), steps=10, sampler=sampler,
                 generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn((16, 2), generator=g)
    with torch.no_grad():
        out = denoise_chain(model, SCHEDULE, x_T, ts=SCHEDULE.respaced(10), sampler=sampler,
                            generator=g)
    assert torch.equal(out, ref)


# ---------------------------------------------------------------- the suite


def w2_pot(samples: torch.Tensor, reference: torch.Tensor) -> float:
    a, b = samples.double().flatten(1).numpy(), reference.double().flatten(1).numpy()
    cost = ot.dist(a, b)
    return math.sqrt(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost))


TINY = dict(
    n_samples=48,
    steps=[3, 6],
    eval_steps=6,
    exposure_steps=6,
    bits=[8, 3],
    granularity=["channel", "tensor"],
    activation_bits=8,
    calibration_n=8,
    attack_n=16,
    attack_timesteps=[200],
    eps_linf=[0.05, 0.5],
    eps_l2=[0.2, 1.0],
    pgd_steps=3,
    init_n=8,
    init_sampling_steps=3,
    init_eps_linf=[0.3],
    init_eps_l2=[1.0],
    noise_sigmas=[0.1, 0.5],
    noise_draws=2,
)


def test_suite_is_deterministic_json_ready_and_plots(tmp_path) -> None:
    torch.manual_seed(0)
    models = {"raw": build_model("mlp2d", (2,)), "ema": build_model("mlp2d", (2,))}
    g = torch.Generator().manual_seed(0)
    reference, floor = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    settings = RobustnessSettings(**TINY)

    def run() -> dict:
        return run_robustness_suite(
            models,
            SCHEDULE,
            reference,
            floor_reference=floor,
            suites=["steps", "exposure", "quant", "attack", "noise"],
            settings=settings,
            quality_fn=lambda x: {"w2": w2_pot(x, reference), "mean": x.mean().item()},
            progress=False,
        )

    first, second = run(), run()
    first.pop("timing_s"), second.pop("timing_s")
    assert first == second
    assert json.loads(json.dumps(first, allow_nan=False)) == first
    raw = first["attack"]["raw"]["denoiser_input"]
    assert raw["linf"]["200"]["values"][-1] > raw["linf"]["200"]["clean"]
    assert first["ladders"]["raw"]["attack_xt_linf_t200"] == raw["linf"]["200"]
    init = first["attack"]["raw"]["initial_noise"]["l2"]
    assert init["extra"]["deviation"][-1] > 0 and init["metric"] == "w2"
    assert first["metric"] == "w2"  # picked automatically: no digits_fid here
    assert first["steps"]["raw"]["adm"]["quality"][0]["w2"] == first["summary"]["raw"]["w2@adm3"]
    assert (
        first["quant"]["raw"]["channel"]["size_bytes"][0]
        < first["quant"]["raw"]["channel"]["float_bytes"]
    )
    # a robust epsilon that was never reached is None, and the strongest perturbation tried is kept
    summary = first["summary"]["raw"]
    largest = summary["robust_epsilon_largest_tried"]
    assert largest["weight_noise_sigma"] == max(TINY["noise_sigmas"])
    assert set(summary["robust_epsilon_largest_tried"]) == set(summary["robust_epsilon"])
    # raw and ema differ only by weights: the same x_T gives a different but fixed answer
    assert first["steps"]["raw"] != first["steps"]["ema"]
    paths = plot_robustness(first, tmp_path)
    assert {p.name for p in paths} == {
        f"robustness_{k}.png" for k in ("steps", "exposure", "quant", "attack", "noise")
    }
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_suite_takes_a_float_quality_fn_and_one_suite() -> None:
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,))
    reference = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    settings = RobustnessSettings(**{**TINY, "noise_sigmas": [0.5, 5.0]})
    res = run_robustness_suite(
        {"raw": model},
        SCHEDULE,
        reference,
        floor_reference=reference,
        suites=["noise"],
        settings=settings,
        quality_fn=lambda x: w2_pot(x, reference),
        progress=False,
    )
    assert res["metric"] == "quality"
    assert set(res["summary"]["raw"]) == {"robust_epsilon", "robust_epsilon_largest_tried"}
    assert list(res["ladders"]["raw"]) == ["noise_weights"]
    noise = res["noise"]["raw"]
    assert noise["levels"] == [0.5, 5.0] and len(noise["extra"]["per_draw"][1]) == 2
    # 5x the weight norm in every filter wrecks the model: a robust sigma inside the sweep
    assert noise["values"][1] > 1.5 * noise["clean"]
    assert 0 < res["summary"]["raw"]["robust_epsilon"]["weight_noise_sigma"] <= 5.0


def test_settings_forbid_unknown_keys_and_normalize() -> None:
    with pytest.raises(ValueError):
        RobustnessSettings(stepz=[5])
    s = RobustnessSettings(granularity="tensor", eps_linf=[0.1, 0.01, 0.1], bits=[4, 8])
    assert s.granularity == ["tensor"] and s.eps_linf == [0.01, 0.1] and s.bits == [8, 4]
    with pytest.raises(ValueError):
        RobustnessSettings(eps_l2=[-1.0])
    assert RobustnessSettings(exposure_steps=20).exposure_steps == [20]
    assert StepsSettings.of(RobustnessSettings()).ladder_steps() == (100, [50, 20, 10, 5, 3])
    with pytest.raises(ValueError, match="largest is the clean level"):
        RobustnessSettings(steps=[20])
