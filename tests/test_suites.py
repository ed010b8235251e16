"""The robustness-suite registry, ladder records with a separate selection stream, shared clean
runs, and the exposure gap of the exact Gaussian denoiser against its closed form."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from flatgen import records as keys
from flatgen.diffusion import NoiseSchedule
from flatgen.models import build_model
from flatgen.robustness import (
    SUITES,
    GaussianDenoiser,
    RobustnessSettings,
    SuiteSummary,
    ladder_record,
    plot_robustness,
    register_suite,
    run_robustness_suite,
    sampler_only_gap,
)
from flatgen.robustness.suites import base as suite_base
from flatgen.robustness.suites import unregister_suite

SCHEDULE = NoiseSchedule("linear", 1000)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_keys_spell_the_contract() -> None:
    assert keys.steps_ladder_id("adm") == "steps_adm" == keys.STEPS_ADM
    assert keys.quant_ladder_id("wa", "channel") == "quant_wa_channel"
    assert keys.attack_xt_ladder_id("linf", 100) == "attack_xt_linf_t100"
    assert keys.attack_xT_ladder_id("l2") == "attack_xT_l2"
    assert keys.exposure_gap_key("l2", 20) == "exposure_gap_l2@T20"
    assert keys.exposure_gap_sampler_only_key("sq", 10) == "exposure_gap_sampler_only_sq@T10"
    assert keys.quant_quality_key("w2", 8, "tensor", scheme="wa") == "w2@w8a8-tensor"
    assert keys.delta_mean_key(None) == "delta_mean_full"
    for bad in (lambda: keys.quant_ladder_id("a", "channel"), lambda: keys.steps_ladder_id("x"),
                lambda: keys.exposure_gap_key("l1", 20)):
        with pytest.raises(ValueError):
            bad()


class ToySuite:
    """Mean network output on the reference at t=0, and a two-level ladder from it."""

    name = "toy"

    def ticks(self, settings: RobustnessSettings) -> int:
        return 1

    def run(self, ctx: suite_base.SuiteContext) -> dict:
        with torch.no_grad():
            t = torch.zeros(len(ctx.reference), dtype=torch.long)
            value = ctx.model(ctx.reference, t).abs().mean().item()
        ctx.tick()
        return {"value": value}

    def summarize(self, result: dict, *, metric: str) -> SuiteSummary:
        v = result["value"]
        ladder = ladder_record(levels=[1, 2], clean=v, values=[2 * v, 3 * v],
                               metric="toy", level_name="k", extra={})
        return SuiteSummary(scalars={"toy_value": v}, ladders={"toy_ladder": ladder})

    def plot(self, results: dict, out_dir: Path) -> list[Path]:
        path = Path(out_dir) / "toy.txt"
        path.write_text(repr(sorted(results["toy"])))
        return [path]


@pytest.fixture
def toy_suite():
    suite = register_suite(ToySuite())
    yield suite
    unregister_suite("toy")


def test_a_toy_suite_runs_through_the_registry_alone(toy_suite, tmp_path) -> None:
    from flatgen.registry import Registry

    assert isinstance(SUITES, Registry)
    assert "toy" in SUITES and list(SUITES)[:2] == ["steps", "exposure"]
    assert list(SUITES)[-1] == "toy"  # after the built-in ones
    with pytest.raises(ValueError, match="already registered"):
        register_suite(ToySuite())
    with pytest.raises(TypeError, match="lacks"):
        register_suite(object())
    with SUITES.temporary("toy2", ToySuite()):
        assert "toy2" in SUITES
    assert "toy2" not in SUITES
    torch.manual_seed(0)
    models = {"raw": build_model("mlp2d", (2,)), "ema": build_model("mlp2d", (2,))}
    ref = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    res = run_robustness_suite(models, SCHEDULE, ref, floor_reference=ref, suites=["toy"],
                               quality_fn=lambda x: 0.0, progress=False)
    with torch.no_grad():
        expected = models["ema"](ref, torch.zeros(16, dtype=torch.long)).abs().mean().item()
    assert res["suites"] == ["toy"] and res["toy"]["ema"]["value"] == pytest.approx(expected)
    assert res["summary"]["ema"]["toy_value"] == pytest.approx(expected)
    assert res["ladders"]["ema"]["toy_ladder"]["values"] == pytest.approx([2 * expected,
                                                                          3 * expected])
    assert [p.name for p in plot_robustness(res, tmp_path)] == ["toy.txt"]
    with pytest.raises(ValueError, match="unknown suite"):
        run_robustness_suite(models, SCHEDULE, ref, floor_reference=ref, suites=["nope"],
                             quality_fn=lambda x: 0.0, progress=False)


# ---------------------------------------------------------------- settings, composed

# every key in the order results.json has always written them: the shared ones and each
# built-in suite's (steps, exposure, quant, attack, noise)
WRITTEN_KEYS = [
    "seed", "n_samples", "batch_size", "metric", "robust_fraction", "steps", "samplers",
    "eval_steps", "eval_sampler", "exposure_steps", "exposure_sampler", "variance_hops", "bits",
    "granularity", "quant_schemes", "activation_bits", "activation_calibration",
    "activation_percentile", "calibration_n", "attack_norms", "attack_n", "attack_timesteps",
    "eps_linf", "eps_l2", "pgd_steps", "pgd_restarts", "pgd_step_factor", "random_start",
    "init_n", "init_sampling_steps", "init_pgd_steps", "init_eps_linf", "init_eps_l2",
    "noise_sigmas", "noise_draws",
]


def test_settings_are_the_shared_fields_and_each_suites_own() -> None:
    from flatgen.robustness.settings import suite_settings

    models = suite_settings()
    assert list(models) == ["steps", "exposure", "quant", "attack", "noise"]
    owned = [k for m in models.values() for k in m.model_fields]
    shared = list(RobustnessSettings.model_fields)
    assert sorted(shared + owned) == sorted(WRITTEN_KEYS)  # each key has exactly one owner
    s = RobustnessSettings()
    assert list(s.model_dump()) == list(s.model_dump(mode="json")) == WRITTEN_KEYS
    assert s.bits == [8, 6, 4, 3] and s.attack_timesteps == [100, 500] and s.noise_draws == 4
    assert models["quant"].of(s) == models["quant"]()  # a suite's part, typed
    # only the keys given count as set, so a study's snapshot writes those alone
    given = RobustnessSettings(bits=[4, 8], seed=3)
    assert given.model_fields_set == {"bits", "seed"}
    assert given.model_dump(exclude_unset=True) == {"seed": 3, "bits": [8, 4]}
    assert RobustnessSettings(**given.model_dump()) == given


def test_each_suite_checks_its_own_timesteps() -> None:
    s = RobustnessSettings(attack_timesteps=[100, 500], steps=[5, 50], exposure_steps=[10, 30],
                           eval_steps=20)
    s.check_timesteps(1000, list(SUITES))
    for suite, timesteps, message in (("attack", 400, r"attack_timesteps \[500\] outside 0..399"),
                                      ("steps", 25, r"sampling steps \[50\] exceed"),
                                      ("exposure", 25, r"sampling steps \[30\] exceed")):
        with pytest.raises(ValueError, match=message):
            s.check_timesteps(timesteps, [suite])
        s.check_timesteps(timesteps, ["quant", "noise"])  # the suites not chosen: not checked
    with pytest.raises(ValueError, match=r"sampling steps \[20\] exceed"):
        s.check_timesteps(10, ["toy"])  # the evaluation T' is shared: always checked


def test_a_suites_settings_must_be_its_own() -> None:
    class Clash(suite_base.SuiteSettings):
        bits: list[int] = [4]  # the quant suite's key

    class Clashing(ToySuite):
        settings = Clash

    class NotSettings(ToySuite):
        settings = dict

    with pytest.raises(TypeError, match="SuiteSettings subclass"):
        register_suite(NotSettings())
    with SUITES.temporary("clash", Clashing()):
        with pytest.raises(TypeError, match="'bits' of suite 'clash' is already suite 'quant'"):
            RobustnessSettings()
    assert RobustnessSettings().bits == [8, 6, 4, 3]


LADDERS = dict(n_samples=32, steps=[2, 4, 8], samplers=["adm", "ddim"], eval_steps=4,
               exposure_steps=[4], variance_hops=[1], bits=[8, 2], granularity=["channel"],
               quant_schemes=["w"])


def _ladder_run(selection: bool, calls: Counter | None = None, monkeypatch=None) -> dict:
    torch.manual_seed(0)
    model = build_model("mlp2d", (2,))
    ref = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    if calls is not None:  # count generations of the unperturbed model, per stream
        real, real_streams = suite_base.generate, suite_base.generate_streams

        def counting(m, schedule, **kw):
            if m is model:
                calls[(kw["stream"], kw["sampler"], kw["steps"])] += 1
            return real(m, schedule, **kw)

        def counting_streams(m, schedule, **kw):  # DDIM: both streams in one call
            if m is model:
                for stream in kw["streams"]:
                    calls[(stream, "ddim", kw["steps"])] += 1
                calls["stacked"] += 1
            return real_streams(m, schedule, **kw)

        monkeypatch.setattr(suite_base, "generate", counting)
        monkeypatch.setattr(suite_base, "generate_streams", counting_streams)
    return run_robustness_suite(
        {"raw": model}, SCHEDULE, ref, floor_reference=ref,
        suites=["steps", "exposure", "quant"], settings=RobustnessSettings(**LADDERS),
        quality_fn=lambda x: {"w2": x.pow(2).mean().sqrt().item()}, selection=selection,
        progress=False,
    )


def test_ladders_with_selection_share_clean_runs(monkeypatch) -> None:
    calls: Counter = Counter()
    res = _ladder_run(True, calls, monkeypatch)
    # the DDIM ladder samples both streams in one call per T'
    assert calls.pop("stacked") == 3
    # each clean (stream, sampler, T') run happens once: the quant ladder's float quality and
    # the exposure gap's sampling norms reuse the steps ladder's T'=4 ADM runs
    assert set(calls.values()) == {1} and len(calls) == 2 * 2 * 3
    ladders = res["ladders"]["raw"]
    steps = res["steps"]["raw"]["adm"]
    adm = ladders["steps_adm"]
    assert adm["levels"] == [4, 2] and adm["clean"] == steps["quality"][2]["w2"]
    assert adm["values"] == [steps["quality"][1]["w2"], steps["quality"][0]["w2"]]
    assert adm["select_clean"] == steps["select_quality"][2]["w2"] != adm["clean"]
    quant = ladders["quant_w_channel"]
    assert quant["levels"] == [8, 2] and quant["clean"] == steps["quality"][1]["w2"]
    assert quant["select_clean"] == steps["select_quality"][1]["w2"]
    assert res["summary"]["raw"]["w2@w2-channel"] == quant["values"][1]
    # 8 bits barely move the quality; 2 bits move it more, on both streams
    for clean, values in ((quant["clean"], quant["values"]),
                          (quant["select_clean"], quant["select_values"])):
        assert abs(values[0] / clean - 1) < abs(values[1] / clean - 1)
        assert abs(values[0] / clean - 1) < 1e-3
    without = _ladder_run(False)
    assert without["ladders"]["raw"]["steps_adm"]["values"] == adm["values"]  # same verdict noise
    assert all(r["select_values"] is None and r["select_clean"] is None
               for r in without["ladders"]["raw"].values())


# ---------------------------------------------------------------- exposure, exact denoiser


@pytest.mark.parametrize("sampler", ["adm", "ddim"])
def test_sampler_only_exposure_gap_matches_its_closed_form(sampler: str) -> None:
    # Gaussian data N(mu, s^2 I) and its exact denoiser: the gap the exposure suite samples is
    # the sampler's own, which sampler_only_gap gives in closed form (from the data's moments).
    # Sampling error: the squared norm of one eps has relative sd sqrt(2/d) = 0.18, so a mean
    # over n = 4000 is good to about 0.003 per timestep
    d, n, s = 64, 4000, 0.4
    g = torch.Generator().manual_seed(0)
    mu = 0.25 * torch.randn(d, generator=g)
    x0 = mu + s * torch.randn(n, d, generator=g)
    settings = RobustnessSettings(n_samples=n, batch_size=n, exposure_steps=[10, 20],
                                  variance_hops=[], exposure_sampler=sampler)
    res = run_robustness_suite(
        {"exact": GaussianDenoiser(SCHEDULE, mu, s)}, SCHEDULE, x0, floor_reference=x0,
        suites=["exposure"], settings=settings, quality_fn=lambda x: 0.0, progress=False,
    )["exposure"]["exact"]
    for steps in ("10", "20"):
        truth = sampler_only_gap(SCHEDULE, mu=mu, s=s, steps=int(steps), sampler=sampler)
        for form in ("l2", "sq"):
            sampled = res["eps_norm_gap"][steps][form]
            assert sampled["t"] == truth[form]["t"]
            np.testing.assert_allclose(sampled["relative_gap"], truth[form]["relative_gap"],
                                       atol=0.03)
            assert sampled["relative_gap_mean"] == pytest.approx(
                truth[form]["relative_gap_mean"], abs=0.01)
            # the suite's own closed form (from the data's sample moments) agrees too
            assert res["sampler_only"][steps][form]["relative_gap_mean"] == pytest.approx(
                truth[form]["relative_gap_mean"], abs=0.01)
    # the closed form is far from 0 here (a real check), and the l2 gap is smaller than sq
    only = sampler_only_gap(SCHEDULE, mu=mu, s=s, steps=10, sampler=sampler)
    assert min(only["sq"]["relative_gap"]) < -0.1
    assert abs(only["l2"]["relative_gap_mean"]) < abs(only["sq"]["relative_gap_mean"])


def test_a_miscalibrated_denoiser_leaves_the_closed_form() -> None:
    d, n, s = 16, 4000, 0.4
    g = torch.Generator().manual_seed(0)
    mu = 0.5 * torch.randn(d, generator=g)
    x0 = mu + s * torch.randn(n, d, generator=g)
    settings = RobustnessSettings(n_samples=n, batch_size=n, exposure_steps=[20],
                                  variance_hops=[])
    res = run_robustness_suite(
        {"off": GaussianDenoiser(SCHEDULE, mu, s, gain=1 / 1.1)}, SCHEDULE, x0, floor_reference=x0,
        suites=["exposure"], settings=settings, quality_fn=lambda x: 0.0, progress=False,
    )
    row = res["summary"]["off"]
    gap = row[keys.exposure_gap_key("l2", 20)]
    only = row[keys.exposure_gap_sampler_only_key("l2", 20)]
    # under-predicted noise is left in x_t: the sampler meets larger inputs than in training
    assert gap - only > 0.05


def test_closed_form_moments_match_the_chi_distribution_at_the_top() -> None:
    # at t = T-1 the sampler's x_T is N(0, I): E||eps*|| is a scaled chi mean (scipy.stats)
    from scipy import stats

    mu, s = torch.zeros(9), 0.7
    gap = sampler_only_gap(SCHEDULE, mu=mu, s=s, steps=5, sampler="adm")
    a = SCHEDULE.alphas_cumprod[-1].item()
    e = (1 - a) ** 0.5 / (a * s * s + 1 - a)
    assert gap["l2"]["sampling"][-1] == pytest.approx(e * stats.chi(9).mean())
    assert gap["sq"]["sampling"][-1] == pytest.approx(9 * e * e)
