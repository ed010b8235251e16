"""Properties of the symmetric round-to-nearest quantizer, for any weights (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flatgen.robustness.quantize import fake_quantize_symmetric, symmetric_scale

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
weights = st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(w=weights, bits=st.integers(2, 8), granularity=st.sampled_from(["tensor", "channel"]))
def test_quantizer_properties(w: list[list[float]], bits: int, granularity: str) -> None:
    w = torch.tensor(w, dtype=torch.float32)
    q = fake_quantize_symmetric(w, bits, granularity=granularity)
    qmax = 2 ** (bits - 1) - 1
    scale = symmetric_scale(w, bits, None if granularity == "tensor" else 0)
    scale = scale if granularity == "tensor" else scale.view(-1, 1)
    # on the grid, inside the symmetric range [-qmax, qmax] steps
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert (steps.abs() <= qmax + 1e-3).all()
    # error at most half a step (plus float rounding)
    assert ((q - w).abs() <= scale / 2 * (1 + 1e-5) + 1e-6).all()
    # idempotent: quantizing the grid again changes nothing
    assert torch.allclose(fake_quantize_symmetric(q, bits, granularity=granularity), q,
                          rtol=1e-6, atol=1e-6)
    # symmetric: the grid of -w is the negated grid of w
    assert torch.equal(fake_quantize_symmetric(-w, bits, granularity=granularity), -q)
    # the largest magnitude (per tensor / row) is kept exactly, up to float rounding
    amax = w.abs().amax() if granularity == "tensor" else w.abs().amax(1)
    qmax_seen = q.abs().amax() if granularity == "tensor" else q.abs().amax(1)
    assert torch.allclose(qmax_seen, amax, rtol=1e-5, atol=1e-6)
