"""Where the robustness suites' noise comes from (settings.seed, per stream), the batched
attacks against the same attacks one level at a time, the x_T attack scored per sample, and the
progress bar's count."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from flatgen import records as keys
from flatgen.models import build_model
from flatgen.robustness import (
    RobustnessSettings,
    attack_denoiser_input,
    attack_initial_noise_ladders,
    ddim_generate,
    run_robustness_suite,
)
from flatgen.robustness.suites.attack import attack_images, digit_labels
from tests.test_attacks import SCHEDULE, GaussianDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    n_samples=24, steps=[3, 6], samplers=["adm", "ddim"], eval_steps=6, exposure_steps=6,
    variance_hops=[1], bits=[8, 3], granularity=["channel"], quant_schemes=["w"],
    attack_n=8, attack_timesteps=[200], eps_linf=[0.05, 0.5], eps_l2=[0.2, 1.0], pgd_steps=2,
    init_n=6, init_sampling_steps=2, init_eps_linf=[0.3], init_eps_l2=[0.5, 1.0],
    noise_sigmas=[0.1, 0.5], noise_draws=2,
)
SUITE_NAMES = ["steps", "exposure", "quant", "attack", "noise"]


class TinyDenoiser(nn.Module):
    """A time-conditioned conv net on 1x8x8 with no batch-coupled layer: each row of a batch is
    computed on its own, so a batched attack can only differ from a lone one by rounding."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.out = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale = 1 + t.float().view(-1, 1, 1, 1) / 1000
        return self.out(torch.tanh(self.inp(x) * scale))


def _data(n: int = 40, shape: tuple[int, ...] = (2,)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)


def _suite(models: dict, seed: int, *, selection: bool, shape=(2,), **over) -> dict:
    ref, floor = _data(shape=shape)
    res = run_robustness_suite(
        models, SCHEDULE, ref, floor_reference=floor, suites=SUITE_NAMES,
        settings=RobustnessSettings(**{**TINY, "seed": seed, **over}),
        quality_fn=lambda x: {"w2": x.pow(2).mean().sqrt().item() + x.mean().abs().item()},
        selection=selection, progress=False,
    )
    res.pop("timing_s")
    return res


# ---------------------------------------------------------------- every draw from the seed


def test_every_stream_of_every_suite_comes_from_the_seed() -> None:
    torch.manual_seed(0)
    a, b = build_model("mlp2d", (2,)), build_model("mlp2d", (2,))
    # "twin" is a copy of "a" measured after "b": with common random numbers it sees the same
    # draws as "a" (whatever ran between), so its results are a's exactly
    first = _suite({"a": a, "b": b, "twin": copy.deepcopy(a)}, 0, selection=True)
    for suite in SUITE_NAMES:
        assert first[suite]["twin"] == first[suite]["a"] != first[suite]["b"], suite
    other = _suite({"a": a}, 1, selection=True)
    ladders, moved = first["ladders"]["a"], other["ladders"]["a"]
    assert set(ladders) == set(moved) and len(ladders) >= 10
    # 2-D data: the x_T attack's distance ladder, but no digit-flip ladder
    assert keys.ATTACK_INIT_L2_DIST in ladders and keys.ATTACK_INIT_L2_FLIP not in ladders
    for lid, rec in ladders.items():
        # seed 1 redraws every stream of every ladder; the selection stream differs from the
        # verdict one within a seed
        assert rec["values"] != moved[lid]["values"], lid
        assert rec["select_values"] != moved[lid]["select_values"], lid
        assert rec["select_values"] != rec["values"], lid
        if not lid.startswith("attack_xT_") or lid.endswith(("_linf", "_l2")):
            assert rec["clean"] != moved[lid]["clean"] and rec["select_clean"] != rec["clean"]
    for suite in ("exposure",):  # its draws (training-input noise, chains) move with the seed
        assert first[suite]["a"] != other[suite]["a"]
    # the attacked test images: one subset per (seed, stream), the same for every model
    xt = {name: first["attack"][name]["denoiser_input"]["linf"]["200"]["extra"]
          for name in ("a", "b")}
    assert xt["a"]["images"] == xt["b"]["images"] and len(xt["a"]["images"]) == 8
    assert xt["a"]["select_images"] == xt["b"]["select_images"] != xt["a"]["images"]
    moved_images = other["attack"]["a"]["denoiser_input"]["linf"]["200"]["extra"]["images"]
    assert moved_images != xt["a"]["images"]
    assert xt["a"]["images"] != list(range(8))  # no longer the first attack_n test images
    # the verdict stream does not depend on whether the selection stream is measured
    alone = _suite({"a": a}, 0, selection=False)
    for lid, rec in alone["ladders"]["a"].items():
        assert rec["values"] == pytest.approx(ladders[lid]["values"], rel=1e-5, abs=1e-7), lid


def test_attack_images_are_a_seeded_subset_per_stream() -> None:
    ref = torch.arange(50.0).view(50, 1)
    draws = {(seed, stream): attack_images(ref, 10, seed=seed, stream=stream)[1]
             for seed in (0, 1) for stream in ("verdict", "select")}
    assert len(set(map(tuple, draws.values()))) == 4  # seeds and streams all differ
    images, idx = attack_images(ref, 10, seed=0, stream="verdict")
    assert images.flatten().tolist() == [float(i) for i in idx] and len(set(idx)) == 10
    assert attack_images(ref, 10, seed=0, stream="verdict")[1] == idx  # reproducible
    assert sorted(attack_images(ref, 99, seed=0, stream="select")[1]) == list(range(50))


# ---------------------------------------------------------------- batched = one level alone


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batched_xt_attack_equals_each_level_alone(norm: str) -> None:
    model = TinyDenoiser()
    g = torch.Generator().manual_seed(1)
    x0, x0_sel = torch.randn(7, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    eps = [0.05, 0.1, 0.3] if norm == "linf" else [0.5, 1.0, 3.0]
    # 2 restarts: the second starts at a random point, so the starts' draws matter; a batch
    # size of 4 cuts the stacked rows across levels and streams
    kw = {"t": 300, "norm": norm, "steps": 3, "restarts": 2, "seed": 5, "select": True,
          "select_x0": x0_sel}
    batched = attack_denoiser_input(model, SCHEDULE, x0, eps_list=eps, batch_size=4, **kw)
    for k, e in enumerate(eps):
        alone = attack_denoiser_input(model, SCHEDULE, x0, eps_list=[e], batch_size=256, **kw)
        for key in ("values", "select_values"):
            assert batched[key][k] == pytest.approx(alone[key][0], rel=1e-5)
        assert batched["extra"]["deviation"][k] == pytest.approx(
            alone["extra"]["deviation"][0], rel=1e-4)
        assert batched["clean"] == pytest.approx(alone["clean"], rel=1e-6)
    assert batched["values"][-1] > batched["values"][0] > batched["clean"]


def test_batched_xT_attack_equals_each_level_alone() -> None:
    model = TinyDenoiser()
    g = torch.Generator().manual_seed(2)
    x_T, x_T_sel = torch.randn(5, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    eps = [0.2, 0.5, 1.5]
    kw = {"quality": lambda x: x.abs().mean().item(), "norm": "l2", "sampling_steps": 2,
          "steps": 2, "restarts": 2, "seed": 4, "select": True, "select_x_T": x_T_sel,
          "labels": lambda x: (x.flatten(1).mean(1) > 0).long()}
    batched = attack_initial_noise_ladders(model, SCHEDULE, x_T, eps_list=eps, batch_size=3,
                                           **kw)
    for k, e in enumerate(eps):
        alone = attack_initial_noise_ladders(model, SCHEDULE, x_T, eps_list=[e], **kw)
        for kind in ("quality", "dist", "flip"):
            for key in ("values", "select_values"):
                assert batched[kind][key][k] == pytest.approx(alone[kind][key][0], rel=1e-4,
                                                              abs=1e-6), (kind, key)
        np.testing.assert_allclose(batched["dist"]["per_sample"][k],
                                   alone["dist"]["per_sample"][0], rtol=1e-4)


# ---------------------------------------------------------------- x_T per sample


def test_xT_attack_per_sample_distance_and_flips_match_a_linear_sampler() -> None:
    # with the exact Gaussian denoiser and no clipping, DDIM is linear: sample = k x_T, so a
    # delta on the L2 sphere of radius eps moves every sample by |k| eps exactly. A label that
    # reads the sign of the first coordinate can flip only where |sample_0| < |k| eps
    d, n = 16, 12
    model = GaussianDenoiser(0.5)
    x_T = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    chain = {"steps": 4, "clip": False}
    with torch.no_grad():
        clean = ddim_generate(model, SCHEDULE, x_T, **chain)
        k = abs((ddim_generate(model, SCHEDULE, torch.ones(1, d), **chain))[0, 0].item())
    eps = [0.5, 2.0, 8.0]
    out = attack_initial_noise_ladders(
        model, SCHEDULE, x_T, eps_list=eps, quality=lambda x: 0.0, norm="l2", sampling_steps=4,
        steps=3, clip=False, labels=lambda x: (x[:, 0] > 0).long(), select=True,
    )
    dist, flip = out["dist"], out["flip"]
    assert dist["clean"] == flip["clean"] == 0.0 and dist["select_clean"] == 0.0
    assert np.shape(dist["per_sample"]) == (3, n) == np.shape(flip["per_sample"])
    np.testing.assert_allclose(dist["per_sample"], [[k * e] * n for e in eps], rtol=1e-4)
    np.testing.assert_allclose(dist["values"], [k * e for e in eps], rtol=1e-4)
    spread = (k * (x_T - x_T.roll(1, 0))).norm(dim=1).mean().item()
    assert dist["extra"]["spread_l2"] == pytest.approx(spread, rel=1e-4)
    np.testing.assert_allclose(dist["extra"]["select_per_sample"], [[k * e] * n for e in eps],
                               rtol=1e-4)
    for row, e, value in zip(flip["per_sample"], eps, flip["values"], strict=True):
        assert set(row) <= {0.0, 1.0} and value == pytest.approx(sum(row) / n)
        reachable = (clean[:, 0].abs() < k * e).double().tolist()
        assert all(f <= r for f, r in zip(row, reachable, strict=True))
    assert flip["values"][-1] > 0  # at 8 sd the sign of some samples turns
    no_labels = attack_initial_noise_ladders(model, SCHEDULE, x_T, eps_list=[1.0],
                                             quality=lambda x: 0.0, norm="l2", steps=1)
    assert no_labels["flip"] is None and no_labels["dist"]["select_values"] is None


def test_the_suite_writes_the_per_sample_ladders_and_digit_flips() -> None:
    res = _suite({"raw": TinyDenoiser()}, 0, selection=True, shape=(1, 8, 8),
                 init_eps_l2=[1.0, 8.0], eps_l2=[0.5], n_samples=8)
    ladders = res["ladders"]["raw"]
    for norm in ("linf", "l2"):
        dist = ladders[keys.attack_xT_sample_ladder_id(norm, "dist")]
        flip = ladders[keys.attack_xT_sample_ladder_id(norm, "flip")]
        assert np.shape(dist["per_sample"]) == (len(dist["levels"]), TINY["init_n"])
        assert dist["values"][-1] > 0 and dist["select_values"] is not None
        assert flip["metric"] == "label_flip" and len(flip["select_values"]) == len(
            flip["levels"])
    labels = digit_labels((1, 8, 8))
    assert labels is not None and digit_labels((2,)) is None
    got = labels(torch.zeros(3, 1, 8, 8))
    assert got.shape == (3,) and int(got.min()) >= 0 and int(got.max()) <= 9


# ---------------------------------------------------------------- progress


@pytest.mark.parametrize("selection", [False, True])
def test_the_progress_total_equals_the_ticks_taken(monkeypatch, selection: bool) -> None:
    import flatgen.progress

    seen: dict[str, float] = {"total": 0, "done": 0}

    class Bar:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, name, total):
            seen["total"] = total
            return 0

        def advance(self, task):
            seen["done"] += 1

        def update(self, task, **kw):
            pass

    monkeypatch.setattr(flatgen.progress, "make_progress", lambda enabled: Bar())
    torch.manual_seed(0)
    models = {"raw": build_model("mlp2d", (2,)), "ema": build_model("mlp2d", (2,))}
    ref, floor = _data()
    run_robustness_suite(models, SCHEDULE, ref, floor_reference=floor, suites=SUITE_NAMES,
                         settings=RobustnessSettings(**{**TINY, "batch_size": 5}),
                         quality_fn=lambda x: float(x.pow(2).mean()), selection=selection,
                         progress=True)
    assert seen["done"] == seen["total"] > 0
    assert math.isfinite(seen["total"])


def test_stacked_ddim_streams_equal_each_stream_alone() -> None:
    from flatgen.robustness.exposure import EpsNormRecorder
    from flatgen.robustness.steps import generate, generate_streams

    model = TinyDenoiser()
    kw = {"shape": (1, 8, 8), "n": 7, "steps": 4, "seed": 3}
    recorders = {s: EpsNormRecorder() for s in ("verdict", "select")}
    # batch size 5 cuts the stacked 14 rows across the two streams
    stacked = generate_streams(model, SCHEDULE, streams=["verdict", "select"], batch_size=5,
                               on_step=recorders, **kw)
    for stream in ("verdict", "select"):
        alone_rec = EpsNormRecorder()
        alone = generate(model, SCHEDULE, sampler="ddim", stream=stream, batch_size=5,
                         on_step=alone_rec, **kw)
        torch.testing.assert_close(stacked[stream], alone, rtol=1e-5, atol=1e-6)
        assert recorders[stream].counts == alone_rec.counts
        for form in ("l2", "sq"):
            for t, v in alone_rec.means(form).items():
                assert recorders[stream].means(form)[t] == pytest.approx(v, rel=1e-5)
    assert not torch.allclose(stacked["verdict"], stacked["select"])
