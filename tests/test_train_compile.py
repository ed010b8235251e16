"""train.compile: the training forward compiled with inductor (torch.compile).

A compiled run resumed from its checkpoint ends bitwise equal to an uninterrupted compiled run;
the resumed process loads the compiled kernels from the run's own cache (RUN/.cache/inductor)
instead of compiling again; compiled and eager training differ by rounding only.
Compiling costs tens of seconds on this CPU, so the model is the tiny toy MLP, for 12 steps.
"""

from __future__ import annotations

import json

import pytest
import torch

from flatgen.train import load_weights, train
from flatgen.train.compile import CACHE_DIR, compile_wanted, compiler_missing
from tests.test_train import Crash, _crash_at

pytestmark = pytest.mark.usefixtures("one_thread")
needs_compiler = pytest.mark.skipif(compiler_missing() is not None,
                                    reason=f"inductor cannot compile here: {compiler_missing()}")


def _config(tiny_toy_config, compile):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.compile = compile
    return cfg


def _weights(run):
    return load_weights(run / "checkpoints" / "last", "model")


def test_compile_default_is_on_for_cuda_only():
    assert compile_wanted(None, "cuda") and not compile_wanted(None, "cpu")
    assert compile_wanted(True, "cpu") and not compile_wanted(False, "cuda")


def test_compile_without_a_compiler_is_refused_before_any_write(tmp_path, tiny_toy_config,
                                                                monkeypatch):
    from flatgen.errors import InputError
    from flatgen.train import compile as compile_module

    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="needs a C.. compiler"):
        train(_config(tiny_toy_config, True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@needs_compiler
def test_compiled_resume_is_bitwise_equal_and_reuses_the_cache(tmp_path, tiny_toy_config):
    from torch._dynamo.utils import counters

    cfg = _config(tiny_toy_config, True)
    parts, whole = tmp_path / "parts", tmp_path / "whole"
    torch._dynamo.reset()
    with pytest.raises(Crash):  # crash after the step-5 checkpoint, at step 8
        train(cfg, parts, progress=False, on_step=_crash_at(8))
    assert any((parts / CACHE_DIR).iterdir())
    # a new process would start with no compiled code in memory: only the run's cache
    torch._dynamo.reset()
    counters.clear()
    train(cfg, parts, resume=True, progress=False)
    hits = counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"][
        "autograd_cache_hit"]
    assert hits > 0 and counters["inductor"]["fxgraph_cache_miss"] == 0, dict(counters)
    train(cfg, whole, progress=False)
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((parts / "train_summary.json").read_text())["compiled"] is True


@needs_compiler
def test_compiled_and_eager_agree_to_rounding(tmp_path, tiny_toy_config):
    eager = train(_config(tiny_toy_config, None), tmp_path / "eager", progress=False)  # CPU: off
    comp = train(_config(tiny_toy_config, True), tmp_path / "compiled", progress=False)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    for k in a:  # apart by rounding only: far less than what the last 7 steps moved them
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)
    earlier = load_weights(tmp_path / "eager" / "checkpoints" / "step-5", "model")
    assert max((a[k] - earlier[k]).abs().max().item() for k in a) > 1e-3  # 10x the tolerance
    assert comp.final_loss == pytest.approx(eager.final_loss, rel=1e-4)
    assert json.loads((tmp_path / "eager" / "train_summary.json").read_text())["compiled"] is False
    assert not (tmp_path / "eager" / ".cache").exists()


@needs_compiler
def test_compiled_sampling_agrees_with_eager(tmp_path, tiny_toy_config):
    from flatgen.diffusion import generate
    from flatgen.train import load_run

    train(_config(tiny_toy_config, False), tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    model = run.model()
    kwargs = dict(n=16, shape=run.sample_shape(), steps=5, sampler="ddim", seed=3)
    eager = generate(model, run.schedule, **kwargs)
    comp = generate(model, run.schedule, compile=True, **kwargs)
    assert not model.training and not torch.equal(eager, generate(model, run.schedule,
                                                                  **{**kwargs, "seed": 4}))
    torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-4)
