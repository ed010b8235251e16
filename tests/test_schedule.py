"""The one lr schedule (warm-up + cosine to 10%) against torch's schedulers and train/loop."""

from __future__ import annotations

import pytest
import torch

from flatgen.train.schedule import lr_factor, lr_lambda


def _torch_factors(total: int, warmup: int) -> list[float]:
    """LinearLR warm-up then CosineAnnealingLR down to eta_min = 0.1 (peak lr 1)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler
    cosine = sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=0.1)
    if warmup:
        warm = sched.LinearLR(opt, start_factor=1 / warmup, total_iters=warmup - 1)
        cosine = sched.SequentialLR(opt, [warm, sched.CosineAnnealingLR(
            opt, T_max=total - warmup, eta_min=0.1)], milestones=[warmup])
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    return out


@pytest.mark.parametrize("total,warmup", [(50, 0), (40, 8), (7, 1)])
def test_cosine_with_warmup_matches_torch(total, warmup):
    ours = [lr_factor(s, total=total, warmup=warmup) for s in range(total)]
    assert ours == pytest.approx(_torch_factors(total, warmup), abs=1e-9)
    assert ours[0] == pytest.approx(1 / warmup if warmup else 1.0)


def test_closed_form_points_and_constant():
    assert lr_factor(0, total=10) == 1.0
    assert lr_factor(5, total=10) == pytest.approx(0.55)  # halfway: the mean of 1 and 0.1
    assert lr_factor(7, total=12, warmup=2) == pytest.approx(0.55)  # halfway after warm-up
    assert lr_factor(10, total=10) == pytest.approx(0.1)
    assert lr_factor(99, total=10) == pytest.approx(0.1)  # past the end: the floor
    assert [lr_factor(s, total=9, warmup=3, decay="constant") for s in range(5)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="lr decay"):
        lr_lambda(total=5, decay="linear")


def test_diffusion_loop_uses_the_same_schedule():
    from flatgen.config import build_config
    from flatgen.train.loop import lr_lambda as loop_lambda

    for decay in ("cosine", "constant"):
        cfg = build_config({"train": {"steps": 30, "warmup_steps": 4, "lr_decay": decay}})
        theirs = loop_lambda(cfg)
        ours = lr_lambda(total=30, warmup=4, decay=decay)
        assert [ours(s) for s in range(35)] == [theirs(s) for s in range(35)]
