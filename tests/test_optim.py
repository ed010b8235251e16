"""SAM family, EMA and SWA against their formulas on tiny models."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor, nn

from flatgen.optim import (
    EMA,
    SAM,
    SWA,
    LookSAM,
    MomentumSAM,
    SAMEveryK,
    global_norm,
    running_stats_frozen,
)

RHO, LR = 0.3, 0.1


@pytest.fixture(autouse=True)
def _float64():
    """Exact comparisons with the hand computations."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def linear_data(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)


def linear_problem(seed: int = 0):
    """nn.Linear(3, 1) with loss 0.5 * mean((Xw + b - y)^2), and its gradient in closed form."""
    x, y = linear_data(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 3, generator=g))
        model.bias.copy_(torch.randn(1, generator=g))
    xa = torch.cat([x, torch.ones(8, 1)], 1)  # theta = [w, b] acts on [x, 1]

    def grad(theta: Tensor) -> Tensor:
        return xa.T @ (xa @ theta - y.squeeze(1)) / len(x)

    def closure_for(opt: torch.optim.Optimizer):
        def closure() -> Tensor:
            opt.zero_grad()
            loss = 0.5 * (model(x) - y).pow(2).mean()
            loss.backward()
            return loss

        return closure

    return model, grad, closure_for


def theta_of(model: nn.Linear) -> Tensor:
    return torch.cat([model.weight.detach().flatten(), model.bias.detach()])


def test_global_norm_matches_concatenation():
    ts = [torch.randn(3, 4), torch.randn(5, dtype=torch.float32), torch.randn(())]
    flat = torch.cat([t.double().flatten() for t in ts])
    assert torch.allclose(global_norm(ts).double(), flat.norm(), rtol=1e-6)
    assert torch.allclose(global_norm(ts, float("inf")).double(), flat.abs().max(), rtol=1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_hand_computation(adaptive):
    model, grad, closure_for = linear_problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, adaptive=adaptive, lr=LR)
    theta = theta_of(model)
    g = grad(theta)
    if adaptive:  # ASAM: e = rho T^2 g / ||T g||, T = |theta| + eta (Kwon et al.'s offset)
        t = theta.abs() + 0.01
        e = RHO * t**2 * g / (t * g).norm()
    else:
        e = RHO * g / g.norm()
    expected = theta - LR * grad(theta + e)

    x, y = linear_data()
    loss_at_w = 0.5 * (x @ theta[:3] + theta[3] - y.squeeze(1)).pow(2).mean()
    loss = opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), expected, atol=1e-12)
    assert torch.isclose(loss, loss_at_w)  # the loss at w, not at w + e
    assert not opt.perturbed


def test_asam_eta_per_group_matches_hand_computation():
    model, grad, closure_for = linear_problem()
    groups = [{"params": [model.weight], "eta": 0.5}, {"params": [model.bias], "eta": 0.0}]
    opt = SAM(groups, torch.optim.SGD, rho=RHO, adaptive=True, lr=LR)
    theta = theta_of(model)
    g = grad(theta)
    t = theta.abs() + torch.tensor([0.5, 0.5, 0.5, 0.0])  # T = |w| + eta, eta by group
    e = RHO * t**2 * g / (t * g).norm()
    assert (e / t).norm() == pytest.approx(RHO)  # the ball of Kwon et al.: ||T^-1 e|| <= rho
    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta - LR * grad(theta + e), atol=1e-12)
    with pytest.raises(ValueError, match="eta"):
        SAM(model.parameters(), torch.optim.SGD, adaptive=True, eta=-1.0, lr=LR)


def test_per_group_rho_shares_one_norm():
    model, grad, closure_for = linear_problem()
    groups = [{"params": [model.weight], "rho": 0.3}, {"params": [model.bias], "rho": 0.6}]
    opt = SAM(groups, torch.optim.SGD, lr=LR)
    theta = theta_of(model)
    g = grad(theta)
    e = torch.cat([0.3 * g[:3], 0.6 * g[3:]]) / g.norm()
    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta - LR * grad(theta + e), atol=1e-12)


def test_explicit_two_pass_form_equals_step():
    m1, _, closure_for = linear_problem()
    m2 = copy.deepcopy(m1)
    opt1 = SAM(m1.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    opt1.step(closure_for(opt1))

    x, y = linear_data()
    opt2 = SAM(m2.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    (0.5 * (m2(x) - y).pow(2).mean()).backward()
    opt2.first_step(zero_grad=True)
    assert opt2.perturbed
    (0.5 * (m2(x) - y).pow(2).mean()).backward()
    opt2.second_step(zero_grad=True)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


def _mse_closure(model: nn.Module, opt, x: Tensor, y: Tensor, on_call=None):
    """The closure opt.step(closure) takes: zero grads, MSE of model(x) vs y, backward.

    on_call() runs at every call (to count the forward/backward passes)."""

    def closure():
        if on_call is not None:
            on_call()
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    return closure


def _run(opt_factory, steps: int = 4, seed: int = 0) -> tuple[list[Tensor], int]:
    """Train a small MLP with opt.step(closure); final parameters and the number of passes."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    opt = opt_factory(model.parameters())
    passes = []
    closure = _mse_closure(model, opt, x, y, on_call=lambda: passes.append(1))
    for _ in range(steps):
        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()], len(passes)


@pytest.mark.parametrize("variant", [LookSAM, SAMEveryK])
def test_k1_variants_equal_sam_exactly(variant):
    base = dict(rho=RHO, lr=LR, momentum=0.9)
    ref, ref_passes = _run(lambda ps: SAM(ps, torch.optim.SGD, **base))
    got, passes = _run(lambda ps: variant(ps, torch.optim.SGD, k=1, **base))
    assert passes == ref_passes == 8
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a, b)


def test_cheap_variants_do_one_pass_on_cheap_steps():
    _, looksam = _run(lambda ps: LookSAM(ps, torch.optim.SGD, rho=RHO, k=2, lr=LR), steps=4)
    _, every = _run(lambda ps: SAMEveryK(ps, torch.optim.SGD, rho=RHO, k=3, lr=LR), steps=4)
    _, msam = _run(lambda ps: MomentumSAM(ps, torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9))
    assert looksam == 2 + 1 + 2 + 1
    assert every == 2 + 1 + 1 + 2
    assert msam == 4


def test_sam_every_k_plain_step_in_between():
    model, grad, closure_for = linear_problem()
    opt = SAMEveryK(model.parameters(), torch.optim.SGD, rho=RHO, k=2, lr=LR)
    opt.step(closure_for(opt))
    theta = theta_of(model)
    assert not opt.needs_second_pass()
    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta - LR * grad(theta), atol=1e-12)


def test_looksam_reuse_step_matches_formula():
    alpha = 0.5
    model, grad, closure_for = linear_problem()
    opt = LookSAM(model.parameters(), torch.optim.SGD, rho=RHO, k=2, alpha=alpha, lr=LR)
    theta0 = theta_of(model)
    g = grad(theta0)
    g_s = grad(theta0 + RHO * g / g.norm())
    g_v = g_s - (g @ g_s) / (g @ g) * g  # part of the SAM gradient orthogonal to g
    theta1 = theta0 - LR * g_s
    g1 = grad(theta1)
    theta2 = theta1 - LR * (g1 + alpha * g1.norm() * g_v / g_v.norm())

    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta1, atol=1e-12)
    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta2, atol=1e-12)


def test_momentum_sam_sgd_matches_formula():
    mu = 0.9
    model, grad, closure_for = linear_problem()
    opt = MomentumSAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=mu)
    theta0 = theta_of(model)
    buf = grad(theta0)  # no momentum yet: the first step is a plain SGD step
    theta1 = theta0 - LR * buf
    e = -RHO * buf / buf.norm()  # then perturb along the negative momentum
    buf = mu * buf + grad(theta1 + e)
    theta2 = theta1 - LR * buf

    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta1, atol=1e-12)
    opt.step(closure_for(opt))
    assert torch.allclose(theta_of(model), theta2, atol=1e-12)


def test_momentum_sam_adamw_perturbs_along_exp_avg():
    model, _, closure_for = linear_problem()
    opt = MomentumSAM(model.parameters(), torch.optim.AdamW, rho=RHO, lr=LR)
    opt.step(closure_for(opt))
    theta = theta_of(model)
    m = torch.cat([opt.base_optimizer.state[p]["exp_avg"].flatten() for p in model.parameters()])
    opt.first_step()
    assert torch.allclose(theta_of(model) - theta, -RHO * m / m.norm(), atol=1e-12)
    opt.restore()
    assert torch.equal(theta_of(model), theta)


def test_momentum_sam_rejects_base_without_momentum():
    with pytest.raises(ValueError, match="momentum"):
        MomentumSAM(nn.Linear(2, 1).parameters(), torch.optim.SGD, lr=0.1)


def test_rho_schedule_and_set_rho():
    model, _, closure_for = linear_problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=lambda step: 0.1 * (step + 1), lr=LR)
    for step in range(3):
        closure_for(opt)()
        theta = theta_of(model)
        opt.first_step(zero_grad=True)
        assert torch.isclose((theta_of(model) - theta).norm(), torch.tensor(0.1 * (step + 1)))
        closure_for(opt)()
        opt.second_step()
    fixed = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=LR)
    fixed.set_rho(0.5)
    closure_for(fixed)()
    theta = theta_of(model)
    fixed.first_step()
    assert torch.isclose((theta_of(model) - theta).norm(), torch.tensor(0.5))


def test_param_groups_shared_with_base_and_scheduler_reaches_them():
    model, _, closure_for = linear_problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, step_size=1, gamma=0.5)
    opt.step(closure_for(opt))
    sched.step()
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[0]["lr"] == pytest.approx(LR / 2)
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups is opt.base_optimizer.param_groups


def test_state_dict_round_trip_gives_identical_steps():
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1))
        opt = LookSAM(model.parameters(), torch.optim.AdamW, rho=RHO, k=3, alpha=0.5, lr=0.01)
        return model, opt

    x, y = torch.randn(10, 3), torch.randn(10, 1)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.step(_mse_closure(model, opt, x, y))

    m1, o1 = build()
    train(m1, o1, 2)  # mid-cycle: the reuse direction g_v matters for the next step
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "opt": o1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    m2, o2 = build()
    m2.load_state_dict(saved["model"])
    o2.load_state_dict(saved["opt"])
    assert o2.num_steps == 2
    train(m1, o1, 3)
    train(m2, o2, 3)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_step_restores_weights_when_second_pass_raises():
    model, _, _ = linear_problem()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    theta = theta_of(model)
    calls = 0

    def closure():
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        opt.zero_grad()
        model(torch.ones(2, 3)).sum().backward()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    assert torch.equal(theta_of(model), theta)
    assert not opt.perturbed


def test_step_without_closure_explains():
    opt = SAM(nn.Linear(2, 1).parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


def test_running_stats_frozen():
    bn = nn.BatchNorm1d(3).train()
    bn(torch.randn(8, 3))
    mean, count = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    with running_stats_frozen(bn):
        out = bn(torch.randn(8, 3) + 5)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.num_batches_tracked, count)
    assert out.mean().abs() < 1e-6  # still normalized with the batch statistics
    assert bn.track_running_stats


def _set_weights(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_matches_formula_and_copies_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    _set_weights(model, 0.0)
    ema = EMA(model, decay=0.5, warmup=True)
    expected = 0.0
    for n, w in enumerate([1.0, 2.0, 4.0, 8.0]):
        _set_weights(model, w)
        model[1].running_mean.fill_(w)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * w
        ema.update(model)
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, expected), atol=1e-12)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())

    flat = EMA(model, decay=0.9, warmup=False)
    _set_weights(model, 10.0)
    flat.update(model)
    assert torch.allclose(next(flat.module.parameters()), torch.tensor(0.9 * 8 + 0.1 * 10))

    restored = EMA(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), decay=0.1)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 4 and restored.decay == 0.5
    x = torch.randn(4, 2)
    assert torch.equal(restored.module(x), ema.module(x))


def test_swa_equal_weight_average_of_due_steps():
    model = nn.Linear(2, 1)
    swa = SWA(model, start=2, every=2)
    averaged = []
    for step in range(8):
        _set_weights(model, float(step**2))
        if swa.update(model, step):
            averaged.append(float(step**2))
    assert averaged == [4.0, 16.0, 36.0]
    assert swa.n_averaged == 3
    for p in swa.module.parameters():
        assert torch.allclose(p, torch.full_like(p, sum(averaged) / 3), atol=1e-12)

    again = SWA(nn.Linear(2, 1))
    again.load_state_dict(swa.state_dict())
    assert (again.start, again.every, again.n_averaged) == (2, 2, 3)
    x = torch.randn(3, 2)
    assert torch.equal(again.module(x), swa.module(x))


def test_averages_unwrap_and_save_like_a_model(tmp_path):
    from safetensors.torch import load_file, save_file

    model = nn.Linear(2, 1)
    ema = EMA(nn.DataParallel(model), decay=0.9)
    assert isinstance(ema.module, nn.Linear)
    ema.update(nn.DataParallel(model))
    save_file(ema.module.state_dict(), str(tmp_path / "ema.safetensors"))
    fresh = nn.Linear(2, 1)
    fresh.load_state_dict(load_file(str(tmp_path / "ema.safetensors")))
    x = torch.randn(3, 2)
    assert torch.equal(fresh(x), ema.module(x))


def test_sam_adamw_maps_each_variant_to_its_class():
    from flatgen.optim import SAM, LookSAM, MomentumSAM, SAMEveryK, sam_adamw, sam_variant_names

    params = [torch.nn.Parameter(torch.zeros(3))]
    expected = {
        "sam": SAM, "looksam": LookSAM, "momentumsam": MomentumSAM, "sam-every-k": SAMEveryK
    }  # fmt: skip
    assert set(expected) <= set(sam_variant_names())
    options = {"k": 3, "alpha": 0.2}  # each variant takes its own, the others are ignored
    for variant, cls in expected.items():
        opt = sam_adamw(params, variant, rho=0.1, options=options, lr=1e-3)
        assert type(opt) is cls and isinstance(opt.base_optimizer, torch.optim.AdamW)
        assert getattr(opt, "k", 3) == 3 and getattr(opt, "alpha", 0.2) == 0.2
    with pytest.raises(ValueError, match="unknown SAM variant 'asam'; choose from sam"):
        sam_adamw(params, "asam", rho=0.1)
    with pytest.raises(ValueError, match="unknown SAM variant option"):
        sam_adamw(params, "sam", rho=0.1, options={"kk": 3})
