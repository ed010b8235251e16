"""The samplers registry: every registered sampler runs through one signature on both chains
(conformance), and a toy sampler registered through the registry alone is a name `generate`
takes."""

import pytest
import torch
from diffusers import DDPMScheduler

from flatgen.diffusion import (
    SAMPLER_RULES,
    NoiseSchedule,
    Sampler,
    as_epsilon_model,
    generate,
    sample,
)
from flatgen.diffusion.samplers import (
    SAMPLERS,
    abar_at,
    parse_sampler,
    predict,
    run_sampler,
    sampler_chain,
)
from flatgen.models import build_model

OWN = NoiseSchedule("linear", 200)
# a diffusers model's schedule: "leading" spacing, steps_offset 1 (the pipeline chain)
PIPE = NoiseSchedule.from_scheduler_config(DDPMScheduler(num_train_timesteps=200,
                                                         steps_offset=1).config)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mlp2d", (2,)).eval()


def _names():
    # every registered sampler, each on the model's own chain and on flatgen's respaced chain
    return [n for r in SAMPLER_RULES for n in (r, f"{r}-respaced")]


@pytest.mark.parametrize("schedule", [OWN, PIPE], ids=["own-chain", "pipeline-chain"])
@pytest.mark.parametrize("name", _names())
def test_every_sampler_conforms(one_thread, model, schedule, name):
    steps, shape = 6, (5, 2)
    seen = []
    out = sample(model, schedule, shape, steps=steps, sampler=name,
                 generator=torch.Generator().manual_seed(3), on_step=seen.append)
    again = sample(model, schedule, shape, steps=steps, sampler=name,
                   generator=torch.Generator().manual_seed(3))
    other = sample(model, schedule, shape, steps=steps, sampler=name,
                   generator=torch.Generator().manual_seed(4))
    assert out.shape == shape and torch.isfinite(out).all()
    assert torch.equal(out, again)  # deterministic under a fixed generator
    assert not torch.allclose(out, other)  # and the seed matters (x_T at least)
    # on_step: once per step, top first, at the chain's timesteps, with the step's input
    pairs = sampler_chain(schedule, steps, name)
    assert [s.index for s in seen] == list(range(steps - 1, -1, -1))
    assert [s.t for s in seen] == [t for t, _ in pairs]
    assert all(s.x_t.shape == shape and s.eps.shape == shape for s in seen)
    # the chain: diffusers' own timesteps on a pipeline model unless -respaced
    respaced = name.endswith("-respaced") or schedule.pipeline is None
    assert ([t for t, _ in pairs] == OWN.respaced(steps)[::-1]) == respaced
    # a sub-chain walked with run_sampler is the same as the whole walk's part (one generator)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(shape, generator=g)
    with torch.no_grad():
        whole = run_sampler(model, schedule, x_T, steps=steps, sampler=name, generator=g)
        g = torch.Generator().manual_seed(5)
        x = torch.randn(shape, generator=g)
        x = run_sampler(model, schedule, x, steps=steps, sampler=name, span=slice(0, 2),
                        generator=g)
        x = run_sampler(model, schedule, x, steps=steps, sampler=name, span=slice(2, None),
                        generator=g)
    torch.testing.assert_close(x, whole, rtol=0, atol=1e-6)


def test_every_registered_sampler_documents_its_source():
    for name, entry in SAMPLER_RULES.items():
        assert entry.fn.__doc__, f"sampler {name!r} has no docstring citing its algorithm"
    assert "Alg. 2" in SAMPLER_RULES["adm"].fn.__doc__
    assert "Eq. 12" in SAMPLER_RULES["ddim"].fn.__doc__


def test_parse_sampler_names_and_error():
    assert parse_sampler("adm") == ("adm", None)
    assert parse_sampler("ddim-respaced") == ("ddim", "respaced")
    assert list(SAMPLERS) == ["adm", "ddim", "adm-respaced", "ddim-respaced"]
    with pytest.raises(ValueError, match=r"^unknown sampler 'euler'; choose from adm, ddim, "
                                         r"adm-respaced, ddim-respaced$"):
        parse_sampler("euler")


def _toy(model, schedule, x, *, pairs, generator, clip, eps_scale, on_step):
    """Song et al. 2021 Eq. 12 (sigma = 0) with the network's eps itself, not re-derived from
    the clipped x0: DDIM wherever nothing is clipped."""
    for j, (t, prev) in enumerate(pairs):
        eps, x0 = predict(model, schedule, x, t=t, index=len(pairs) - 1 - j, clip=clip,
                          eps_scale=eps_scale, on_step=on_step)
        a_prev = abar_at(schedule, prev)
        x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


def test_a_sampler_registered_alone_is_a_name_generate_takes(one_thread, model):
    with pytest.raises(ValueError, match="unknown sampler 'toy'"):
        generate(model, OWN, n=4, shape=(2,), steps=5, sampler="toy")
    with SAMPLER_RULES.temporary("toy", Sampler(_toy)):
        assert "toy" in SAMPLERS and "toy-respaced" in SAMPLERS
        toy = generate(model, OWN, n=12, shape=(2,), steps=5, sampler="toy", seed=1,
                       batch_size=5)
        ddim = generate(model, OWN, n=12, shape=(2,), steps=5, sampler="ddim", seed=1,
                        batch_size=5)
        # vector data is not clipped, so the toy is DDIM up to float rounding
        torch.testing.assert_close(toy, ddim, rtol=0, atol=1e-5)
        # on a pipeline model a sampler without a diffusers scheduler walks its DDPM chain
        seen = []
        sample(model, PIPE, (3, 2), steps=4, sampler="toy", on_step=lambda s: seen.append(s.t))
        assert seen == [t for t, _ in PIPE.chain(4, ddim=False)] == [151, 101, 51, 1]
    with pytest.raises(ValueError, match="unknown sampler 'toy'"):
        parse_sampler("toy")


def test_the_eps_view_of_a_v_model_samples_as_the_model(one_thread, model):
    # the robustness suites hold as_epsilon_model(net); read again as v it was a wrong eps
    v = NoiseSchedule("linear", 200, prediction_type="v_prediction")
    for name in ("adm", "ddim"):
        raw = sample(model, v, (4, 2), steps=5, sampler=name,
                     generator=torch.Generator().manual_seed(2))
        view = sample(as_epsilon_model(model, v), v, (4, 2), steps=5, sampler=name,
                      generator=torch.Generator().manual_seed(2))
        assert torch.equal(raw, view)
        assert not torch.allclose(raw, sample(model, OWN, (4, 2), steps=5, sampler=name,
                                              generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="eps view of a v_prediction model"):
        sample(as_epsilon_model(model, v), NoiseSchedule("linear", 200, prediction_type="sample"),
               (4, 2), steps=5)
