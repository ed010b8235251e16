"""The SAM variant registry (a toy variant added through it alone) and SAM's properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from flatgen.config import SAMConfig
from flatgen.optim import SAM, SAM_VARIANTS, register_sam_variant, sam_adamw, sam_variant_names


class SignSAM(SAM):
    """A toy variant: perturb along sign(g) / ||sign(g)||, scaled by its own option `scale`."""

    name = "toy-sign"
    options = ("scale",)

    def __init__(self, params, base_optimizer_cls, *, scale: float = 1.0, **kwargs) -> None:
        super().__init__(params, base_optimizer_cls, **kwargs)
        self.scale = scale

    def _direction(self, p: Tensor) -> Tensor | None:
        return None if p.grad is None else self.scale * torch.sign(p.grad)


@pytest.fixture
def toy_variant():
    with SAM_VARIANTS.temporary(SignSAM.name, SignSAM):
        yield SignSAM


def test_a_toy_variant_trains_through_the_registry(toy_variant):
    assert "toy-sign" in sam_variant_names()
    assert register_sam_variant(SignSAM) is SignSAM  # the same class again: a no-op
    assert SAMConfig(variant="toy-sign").variant == "toy-sign"  # the config reads the registry
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    rho = 0.1
    opt = sam_adamw(
        model.parameters(), "toy-sign", rho=rho, options={"scale": 2.0, "k": 9}, lr=1e-2
    )
    assert type(opt) is SignSAM and opt.scale == 2.0

    def loss() -> Tensor:
        return (model(x) - y).pow(2).mean()

    for _ in range(2):
        w = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        loss().backward()
        signs = [torch.sign(p.grad) for p in model.parameters()]
        opt.first_step(zero_grad=True)
        # the toy direction, normalized: rho * sign(g) / ||sign(g)|| (scale cancels)
        norm = torch.cat([s.flatten() for s in signs]).norm()
        for p, w0, s in zip(model.parameters(), w, signs, strict=True):
            torch.testing.assert_close(p.detach(), w0 + rho * s / norm)
        loss().backward()
        opt.second_step(zero_grad=True)
        assert all(not torch.equal(p, w0) for p, w0 in zip(model.parameters(), w, strict=True))
    assert opt.num_steps == 2


def test_registry_refuses_duplicates_and_unknown_names(toy_variant):
    class Other(SAM):
        name = "toy-sign"

    with pytest.raises(ValueError, match="already registered"):
        register_sam_variant(Other)
    SAM_VARIANTS.unregister("toy-sign")  # the fixture's block ends with it gone either way
    with pytest.raises(ValueError, match="unknown SAM variant"):  # pydantic's error is one
        SAMConfig(variant="toy-sign")


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)
values = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def params_and_grads(draw) -> tuple[list[Tensor], list[Tensor]]:
    sizes = draw(st.lists(shapes, min_size=1, max_size=3))
    ws, gs = [], []
    for size in sizes:
        n = int(torch.tensor(size).prod())
        for out in (ws, gs):
            drawn = draw(st.lists(values, min_size=n, max_size=n))
            out.append(torch.tensor(drawn, dtype=torch.float64).reshape(size))
    return ws, gs


@settings(max_examples=60, deadline=None)
@given(data=params_and_grads(), rho=st.floats(1e-4, 10.0), adaptive=st.booleans())
def test_perturbation_has_norm_rho_and_restore_is_exact(data, rho, adaptive):
    ws, gs = data
    # far above the 1e-12 guard in the normalization, which bends the norm for tiny gradients
    assume(torch.cat([g.flatten() for g in gs]).norm() > 1e-3)
    params = [nn.Parameter(w.clone()) for w in ws]
    for p, g in zip(params, gs, strict=True):
        p.grad = g.clone()
    eta = 0.01
    opt = SAM(params, torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=0.1)
    opt.first_step()
    e = torch.cat([(p.detach() - w).flatten() for p, w in zip(params, ws, strict=True)])
    if adaptive:  # ASAM's ball: ||T^-1 e|| = rho with T = |w| + eta
        e = e / (torch.cat([w.flatten() for w in ws]).abs() + eta)
    assert float(e.norm()) == pytest.approx(rho, rel=1e-6)
    opt.restore()
    for p, w in zip(params, ws, strict=True):
        assert torch.equal(p.detach(), w)  # bit for bit
    assert not opt.perturbed


def test_asam_eta_reaches_the_optimizer_from_the_config():
    from flatgen.config import build_config
    from flatgen.train.method import Method

    cfg = build_config({"method": {"preset": "sam", "sam": {"adaptive": True, "eta": 0.2}}})
    opt = Method(cfg.method, cfg.train).build_optimizer(nn.Linear(2, 2).parameters())
    assert all(g["eta"] == 0.2 and g["adaptive"] for g in opt.param_groups)
