"""train_step: accumulation, DDP, mixed precision, BatchNorm, clipping, failure paths."""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import Tensor, nn

from flatgen.optim import SAM, LookSAM, MomentumSAM, SAMEveryK
from flatgen.train.step import train_step

HERE = Path(__file__).parent
RHO, LR = 0.2, 0.1


def _reset_accelerate() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def make_accelerator():
    """Accelerator factory; accelerate keeps process-wide state that each test starts afresh."""

    def make(**kwargs) -> Accelerator:
        _reset_accelerate()
        return Accelerator(cpu=True, **kwargs)

    yield make
    _reset_accelerate()


def mlp(bn: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(8)] if bn else []
    return nn.Sequential(nn.Linear(3, 8), *norm, nn.Tanh(), nn.Linear(8, 1)).double()


def dataset(n: int = 16, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def split(x: Tensor, y: Tensor, k: int) -> list[tuple[Tensor, Tensor]]:
    return list(zip(x.chunk(k), y.chunk(k), strict=True))


def mse(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9),
    "sam": lambda ps: SAM(ps, torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9),
    "asam": lambda ps: SAM(ps, torch.optim.AdamW, rho=1.0, adaptive=True, lr=0.01),
    "looksam": lambda ps: LookSAM(ps, torch.optim.SGD, rho=RHO, k=2, alpha=0.5, lr=LR),
    "everyk": lambda ps: SAMEveryK(ps, torch.optim.SGD, rho=RHO, k=2, lr=LR),
    "msam": lambda ps: MomentumSAM(ps, torch.optim.AdamW, rho=RHO, lr=0.01),
}


def train(make_accelerator, kind, k: int, steps: int = 3, **step_kw):
    """Final parameters and step results of `steps` train_steps with k micro-batches each.

    `kind` names an entry of OPTIMIZERS or is a factory params -> optimizer.
    """
    accelerator = make_accelerator()
    model = mlp()
    factory = OPTIMIZERS[kind] if isinstance(kind, str) else kind
    model, opt = accelerator.prepare(model, factory(model.parameters()))
    results = []
    for step in range(steps):
        x, y = dataset(seed=step)
        results.append(train_step(model, opt, split(x, y, k), loss_fn=mse,
                       accelerator=accelerator, **step_kw))
    params = [p.detach().clone() for p in accelerator.unwrap_model(model).parameters()]
    return params, results


def assert_params_close(a: list[Tensor], b: list[Tensor], atol: float = 1e-12) -> None:
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, atol=atol, rtol=0)


def test_train_step_equals_closure_step(make_accelerator):
    accelerator = make_accelerator()
    model = mlp()
    ref = copy.deepcopy(model)
    model, opt = accelerator.prepare(model, OPTIMIZERS["sam"](model.parameters()))
    ref_opt = OPTIMIZERS["sam"](ref.parameters())
    x, y = dataset()
    for _ in range(2):
        result = train_step(model, opt, [(x, y)], loss_fn=mse, accelerator=accelerator)

        def closure():
            ref_opt.zero_grad()
            loss = mse(ref, (x, y))
            loss.backward()
            return loss

        ref_loss = ref_opt.step(closure)
    assert result.loss == pytest.approx(ref_loss.item(), abs=1e-12)
    assert_params_close(list(model.parameters()), list(ref.parameters()))


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_accumulation_equals_one_large_batch(make_accelerator, kind):
    big, big_res = train(make_accelerator, kind, k=1)
    acc, acc_res = train(make_accelerator, kind, k=4)
    assert_params_close(big, acc)
    for a, b in zip(big_res, acc_res, strict=True):
        assert a.loss == pytest.approx(b.loss, abs=1e-12)
        assert a.grad_norm == pytest.approx(b.grad_norm, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2])
def test_batchnorm_stats_updated_once_per_sam_step(make_accelerator, k):
    accelerator = make_accelerator()
    model = mlp(bn=True)
    model, opt = accelerator.prepare(model, OPTIMIZERS["sam"](model.parameters()))
    bn = model[1]
    x, y = dataset()
    expected = copy.deepcopy(model)  # the statistics one pass at w would leave
    for xb in x.chunk(k):
        expected(xb)
    train_step(model, opt, split(x, y, k), loss_fn=mse, accelerator=accelerator)
    assert bn.num_batches_tracked.item() == k
    torch.testing.assert_close(bn.running_mean, expected[1].running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.running_var, expected[1].running_var, atol=1e-12, rtol=0)
    assert bn.track_running_stats


@pytest.mark.parametrize("cls", [SAM, LookSAM])
def test_clipping_acts_on_the_applied_gradient(make_accelerator, cls):
    # SGD with lr=1: a step moves the weights by minus the applied gradient
    def factory(ps):
        return cls(ps, torch.optim.SGD, rho=RHO, lr=1.0)  # LookSAM: k=5, step 1 reuses

    clip = 1e-3
    init = torch.cat([p.detach().flatten() for p in mlp().parameters()])
    flat = lambda params: torch.cat([p.flatten() for p in params])  # noqa: E731
    free, free_res = train(make_accelerator, factory, k=1, steps=1)
    one, one_res = train(make_accelerator, factory, k=1, steps=1, grad_clip=clip)
    two, _ = train(make_accelerator, factory, k=1, steps=2, grad_clip=clip)
    free_step, step1, step2 = flat(free) - init, flat(one) - init, flat(two) - flat(one)
    # the reported norm is that of the applied (second-pass) gradient, before clipping
    assert free_step.norm().item() == pytest.approx(free_res[0].grad_norm, rel=1e-9)
    assert one_res[0].grad_norm == pytest.approx(free_res[0].grad_norm, rel=1e-9)
    # the clipped step is the unclipped one scaled to the clip norm (torch adds 1e-6 to the norm)
    torch.testing.assert_close(step1, free_step * clip / free_step.norm(), atol=0, rtol=1e-5)
    # ...and so is the next step (for LookSAM the reuse step, clipped after adding g_v)
    assert step2.norm().item() == pytest.approx(clip, rel=1e-5)


def test_weights_restored_when_second_pass_raises(make_accelerator):
    accelerator = make_accelerator()
    model = mlp(bn=True)
    model, opt = accelerator.prepare(model, OPTIMIZERS["sam"](model.parameters()))
    before = copy.deepcopy(model.state_dict())
    calls = 0

    def failing(net, batch):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return mse(net, batch)

    with pytest.raises(RuntimeError, match="boom"):
        train_step(model, opt, [dataset()], loss_fn=failing, accelerator=accelerator)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert not opt.optimizer.perturbed
    assert model[1].track_running_stats


# -- mixed precision ---------------------------------------------------------------------------


def with_scaler(accelerator: Accelerator, init_scale: float) -> torch.amp.GradScaler:
    """Accelerate refuses fp16 on CPU; give it a CPU GradScaler, which train_step then drives."""
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    return accelerator.scaler


@pytest.mark.parametrize("kind", ["sgd", "sam", "looksam", "msam"])
def test_loss_scaling_unscales_once_per_pass(make_accelerator, kind):
    ref, ref_res = train(make_accelerator, kind, k=2, grad_clip=0.5)
    accelerator = make_accelerator()
    scaler = with_scaler(accelerator, 2.0**12)
    model = mlp()
    model, opt = accelerator.prepare(model, OPTIMIZERS[kind](model.parameters()))
    for step in range(3):
        x, y = dataset(seed=step)
        res = train_step(model, opt, split(x, y, 2), loss_fn=mse, accelerator=accelerator,
                         grad_clip=0.5)
        assert not res.skipped
        assert res.grad_norm == pytest.approx(ref_res[step].grad_norm, rel=1e-9)
    assert_params_close(list(model.parameters()), ref, atol=1e-10)
    assert scaler.get_scale() == 2.0**12  # no overflow, no growth yet


def test_ascent_gradient_is_unscaled(make_accelerator):
    seen: list[list[Tensor]] = []

    class Spy(SAM):
        def first_step(self, zero_grad: bool = False) -> None:
            seen.append([p.grad.clone() for p in self._params()])
            super().first_step(zero_grad)

    for init_scale in [None, 2.0**12]:
        accelerator = make_accelerator()
        if init_scale is not None:
            with_scaler(accelerator, init_scale)
        model = mlp()
        model, opt = accelerator.prepare(model, Spy(model.parameters(), torch.optim.SGD, lr=LR))
        train_step(model, opt, split(*dataset(), 2), loss_fn=mse, accelerator=accelerator)
    assert_params_close(seen[1], seen[0], atol=1e-12)  # what first_step sees is the true gradient


def poisoned(on_call: int):
    """mse whose `on_call`-th call gives an infinite loss (so inf/nan gradients)."""
    calls = 0

    def loss_fn(net, batch):
        nonlocal calls
        calls += 1
        loss = mse(net, batch)
        return loss * float("inf") if calls == on_call else loss

    return loss_fn


@pytest.mark.parametrize(("kind", "on_call"), [("sam", 1), ("sam", 2), ("sgd", 1), ("msam", 1)])
def test_overflow_skips_step_cleanly(make_accelerator, kind, on_call):
    accelerator = make_accelerator()
    scaler = with_scaler(accelerator, 2.0**10)
    model = mlp()
    model, opt = accelerator.prepare(model, OPTIMIZERS[kind](model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    res = train_step(model, opt, [dataset()], loss_fn=poisoned(on_call), accelerator=accelerator)
    assert res.skipped and res.grad_norm is None
    assert_params_close(list(model.parameters()), before, atol=0)
    assert scaler.get_scale() == 2.0**9  # backed off once
    assert accelerator.optimizer_step_was_skipped
    inner = opt.optimizer
    assert len(getattr(inner, "base_optimizer", inner).state) == 0  # no momentum touched
    assert getattr(inner, "num_steps", 0) == 0 and not getattr(inner, "perturbed", False)
    # the scaler is ready for the next step, which then trains normally
    res = train_step(model, opt, [dataset()], loss_fn=mse, accelerator=accelerator)
    assert not res.skipped and not accelerator.optimizer_step_was_skipped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_fp16_autocast_overflow_backs_off_until_steps_succeed(make_accelerator):
    # real fp16 overflow: scaled output gradients beyond 65504 become inf in the fp16 backward
    accelerator = make_accelerator()
    scaler = with_scaler(accelerator, 2.0**24)
    model = mlp().float()
    model, opt = accelerator.prepare(model, SAM(model.parameters(), torch.optim.SGD, lr=LR))
    x, y = (t.float() for t in dataset())

    def fp16_mse(net, batch):
        with torch.autocast("cpu", dtype=torch.float16):
            out = net(batch[0])
        assert out.dtype == torch.float16
        return (out.float() - batch[1]).pow(2).mean()

    before = [p.detach().clone() for p in model.parameters()]
    skipped = []
    for _ in range(20):
        res = train_step(model, opt, [(x, y)], loss_fn=fp16_mse, accelerator=accelerator)
        skipped.append(res.skipped)
        if not res.skipped:
            break
        assert_params_close(list(model.parameters()), before, atol=0)
    assert skipped[0] and not skipped[-1]
    assert scaler.get_scale() == 2.0 ** (24 - (len(skipped) - 1))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_bf16_autocast_in_both_passes(make_accelerator):
    ref, _ = train(make_accelerator, "sam", k=2, steps=1)
    accelerator = make_accelerator(mixed_precision="bf16")
    model = mlp().float()
    model, opt = accelerator.prepare(model, OPTIMIZERS["sam"](model.parameters()))
    seen = []

    def loss_fn(net, batch):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return mse(net, (batch[0].float(), batch[1].float()))

    x, y = dataset(seed=0)  # the data of train()'s first step
    res = train_step(model, opt, split(x, y, 2), loss_fn=loss_fn, accelerator=accelerator)
    assert seen == [torch.bfloat16] * 4  # 2 micro-batches x 2 passes
    assert not res.skipped
    assert_params_close([p.double() for p in model.parameters()], ref, atol=2e-2)


# -- DDP ---------------------------------------------------------------------------------------


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", HERE / "ddp_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_replica_sam_reference(worker, first_step: int = 0) -> dict[str, Tensor]:
    """SAM where each replica perturbs with its own gradient: the average of the replicas'
    gradients at their own w + e_r is applied (steps first_step, ..., STEPS - 1)."""
    model = worker.make_model()
    base = torch.optim.SGD(model.parameters(), lr=worker.LR, momentum=0.9)
    params = list(model.parameters())
    for step in range(first_step, worker.STEPS):
        applied = [torch.zeros_like(p) for p in params]
        for rank in range(worker.WORLD):
            replica = copy.deepcopy(model)
            batches = worker.micro_batches(step, rank)

            def grad_at(net, batches=batches):
                net.zero_grad()
                for b in batches:
                    (worker.loss_fn(net, b) / len(batches)).backward()
                return [p.grad.clone() for p in net.parameters()]

            g = grad_at(replica)
            norm = torch.cat([t.flatten() for t in g]).norm()
            with torch.no_grad():
                for p, gi in zip(replica.parameters(), g, strict=True):
                    p.add_(gi * worker.RHO / norm)
            for a, gs in zip(applied, grad_at(replica), strict=True):
                a += gs / worker.WORLD
        for p, a in zip(params, applied, strict=True):
            p.grad = a
        base.step()
    return model.state_dict()


def test_ddp_two_processes(tmp_path, make_accelerator):
    from safetensors.torch import load_file

    worker = _load_worker()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path)],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out

    def ranks(name):
        r0, r1 = (load_file(str(tmp_path / f"{name}_rank{r}.safetensors")) for r in range(2))
        for key in r0:  # the replicas stay identical
            assert torch.equal(r0[key], r1[key]), (name, key)
        return r0

    def assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-12, rtol=0)

    # synchronized steps equal a single process on the global batch
    accelerator = make_accelerator()
    for name in ["sgd", "sam_sync", "looksam"]:
        assert_same(ranks(name), worker.run(name, accelerator, rank=None))
    # per-replica perturbation: each replica's own ascent gradient, all-reduced second pass
    sam, sam_sync = ranks("sam"), ranks("sam_sync")
    assert_same(sam, _per_replica_sam_reference(worker))
    assert any(not torch.allclose(sam[key], sam_sync[key]) for key in sam)
    # one replica's ascent gradient overflows at step 0: all skip it and back off alike
    overflow = ranks("sam_overflow")
    assert overflow.pop("scale").item() == 2.0**9
    assert_same(overflow, _per_replica_sam_reference(worker, first_step=1))
