"""Tests for flatgen.metrics: W2, Frechet distance, KID, the digits classifier and digits-FID."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import ortho_group

from flatgen.data import load_digits_split, sample_toy2d
from flatgen.metrics import (
    digits_accuracy,
    digits_features,
    digits_fid,
    digits_kid,
    frechet_distance,
    frechet_distance_from_features,
    kid,
    load_digits_classifier,
    quality_report,
    sliced_wasserstein2,
    train_floor_sample,
    wasserstein2,
)
from flatgen.metrics.digits_classifier import default_weights_path


def _assignment_w2(x: np.ndarray, y: np.ndarray) -> float:
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


# --- Wasserstein ------------------------------------------------------------------------------


def test_w2_equals_optimal_assignment() -> None:
    rng = np.random.default_rng(0)
    for d in (1, 3, 10):
        x, y = rng.standard_normal((25, d)), rng.standard_normal((25, d)) + 0.5
        assert wasserstein2(x, y) == pytest.approx(_assignment_w2(x, y), rel=1e-9)


def test_w2_unequal_sizes_equals_assignment_on_replicated_sets() -> None:
    # Uniform measures on 4 and 6 points equal uniform measures on 3 and 2 copies (12 each).
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 2)), rng.standard_normal((6, 2))
    expected = _assignment_w2(np.repeat(x, 3, axis=0), np.repeat(y, 2, axis=0))
    assert wasserstein2(x, y) == pytest.approx(expected, rel=1e-9)


def test_w2_zero_on_identical_sets_and_flattens_tensors() -> None:
    x = torch.randn(30, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    assert wasserstein2(x, x) == 0.0
    assert wasserstein2(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-7)
    assert wasserstein2(x, x.reshape(30, 16).numpy()) == 0.0


def test_w2_of_translation_is_translation_norm() -> None:
    x = np.random.default_rng(3).standard_normal((40, 5))
    shift = np.array([0.3, -1.0, 2.0, 0.0, 0.5])
    assert wasserstein2(x, x + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-9)


def test_w2_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        wasserstein2(np.zeros((3, 2)), np.zeros((3, 3)))


def test_sliced_w2_is_exact_in_one_dimension_and_scales_with_shift() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((50, 1)), rng.standard_normal((70, 1)) * 2 + 1
    # In 1-D every projection is +-1, so sliced W2 is the exact W2.
    assert sliced_wasserstein2(x, y, n_projections=8) == pytest.approx(wasserstein2(x, y))
    # A shift v in d dims: E[(theta . v)^2] = |v|^2 / d over uniform directions theta.
    z = rng.standard_normal((200, 4))
    v = np.array([2.0, 0.0, 0.0, 0.0])
    sw = sliced_wasserstein2(z, z + v, n_projections=4000, seed=0)
    assert sw == pytest.approx(np.linalg.norm(v) / 2.0, rel=0.05)
    assert sliced_wasserstein2(z, z, seed=0) == pytest.approx(0.0, abs=1e-12)


# --- Frechet distance and KID -------------------------------------------------------------------


def test_frechet_distance_closed_form_for_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])  # one singular dim
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    got = frechet_distance((mu1, np.diag(var1)), (mu2, np.diag(var2)))
    assert got == pytest.approx(expected, rel=1e-6)
    # The distance is invariant under a common rotation (full, non-diagonal covariances).
    q = ortho_group.rvs(3, random_state=0)
    rotated = frechet_distance((q @ mu1, q @ np.diag(var1) @ q.T),
                               (q @ mu2, q @ np.diag(var2) @ q.T))
    assert rotated == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_zero_for_identical_statistics() -> None:
    a = np.random.default_rng(5).standard_normal((6, 6))
    sigma = a @ a.T
    same = frechet_distance((np.ones(6), sigma), (np.ones(6), sigma))
    assert same == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_features_matches_gaussian_statistics() -> None:
    rng = np.random.default_rng(6)
    f1, f2 = rng.standard_normal((500, 4)), rng.standard_normal((400, 4)) * 2 + 1
    expected = frechet_distance(
        (f1.mean(0), np.cov(f1, rowvar=False)), (f2.mean(0), np.cov(f2, rowvar=False))
    )
    assert frechet_distance_from_features(f1, f2) == pytest.approx(expected)
    assert frechet_distance_from_features(torch.from_numpy(f1), f2) == pytest.approx(expected)


def test_kid_matches_unbiased_mmd_definition_on_tiny_sets() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) + 1

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / 3 + 1) ** 3

    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kid(x, y, subsets=3, subset_size=5)
    assert mean == pytest.approx(xx + yy - 2 * xy)
    assert std == 0.0  # every subset is the whole of both sets


def test_kid_near_zero_for_same_distribution_and_positive_for_shift() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((600, 8)), rng.standard_normal((600, 8))
    same, same_std = kid(a, b, subsets=50, subset_size=200, seed=0)
    shifted, _ = kid(a, b + 0.5, subsets=50, subset_size=200, seed=0)
    assert same_std > 0
    assert abs(same) < 0.02
    assert shifted > 0.2
    assert kid(a, b, subsets=50, subset_size=200, seed=0) == (same, same_std)  # seeded


# --- digits classifier and digits-FID -----------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    xtr, ytr = load_digits_split("train")
    xte, yte = load_digits_split("test")
    return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}


def test_shipped_classifier_loads_and_is_accurate(digits: dict[str, torch.Tensor]) -> None:
    model = load_digits_classifier()
    assert not model.training
    assert digits_accuracy(digits["xte"], digits["yte"], model) >= 0.97
    feats = digits_features(digits["xtr"], model)
    assert feats.shape == (1500, model.feature_dim) and feats.dtype == np.float64
    assert (feats.std(axis=0) > 0).all()  # no dead feature: the covariance is full rank
    assert (feats**2).mean() == pytest.approx(1.0, rel=1e-4)  # calibrated scale for KID


def test_shipped_weights_match_their_record() -> None:
    path = default_weights_path()
    assert path.stat().st_size < 1_000_000
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["test_accuracy"] >= 0.97
    state = load_digits_classifier().state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].numpy().tobytes())
    assert h.hexdigest() == info["tensors_sha256"]


def test_digits_features_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="1 x 8 x 8"):
        digits_features(torch.zeros(4, 2))


def test_digits_fid_separates_real_from_noise_and_shifted(digits: dict[str, torch.Tensor]) -> None:
    model = load_digits_classifier()
    xte = digits["xte"]
    real = digits_fid(train_floor_sample(digits["xtr"], len(xte), seed=0), xte, model)
    noise = torch.rand(xte.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    shifted = torch.roll(xte, shifts=2, dims=-1)
    assert digits_fid(noise, xte, model) > 10 * real
    assert digits_fid(shifted, xte, model) > 5 * real
    kid_real, _ = digits_kid(train_floor_sample(digits["xtr"], 297, seed=0), xte, classifier=model)
    kid_noise, _ = digits_kid(noise, xte, classifier=model)
    assert kid_noise > 20 * abs(kid_real)


# --- quality report ---------------------------------------------------------------------------


def test_train_floor_sample_is_reproducible_and_distinct() -> None:
    train = torch.arange(1500.0)[:, None]  # row i holds i: the draw's values are its indices
    a = train_floor_sample(train, 297, seed=3)
    assert torch.equal(a, train_floor_sample(train, 297, seed=3))
    assert not torch.equal(a, train_floor_sample(train, 297, seed=4))
    assert len(torch.unique(a)) == 297  # without replacement
    assert np.array_equal(train_floor_sample(train.numpy(), 297, seed=3), a.numpy())
    with pytest.raises(ValueError, match="floor sample size"):
        train_floor_sample(train, 1501)


def test_quality_report_on_digits(digits: dict[str, torch.Tensor]) -> None:
    xtr, xte = digits["xtr"], digits["xte"]
    floor = train_floor_sample(xtr, 200, seed=0)
    samples = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    report = quality_report(samples, xte, floor)
    assert report["n"] == 200
    assert report["w2_floor"] == pytest.approx(wasserstein2(floor, xte))
    assert report["w2"] > report["w2_floor"]
    assert report["digits_fid"] > 10 * report["digits_fid_floor"]
    assert report["kid"] > report["kid_floor"]
    json.dumps(report)  # plain floats and ints only
    with pytest.raises(ValueError, match="same number of samples"):
        quality_report(samples, xte, train_floor_sample(xtr, 100, seed=0))


def test_quality_report_on_2d_points_reports_w2_only() -> None:
    samples, ref, floor = (sample_toy2d("moons", 300, seed=s) for s in (0, 1, 2))
    report = quality_report(samples, ref, floor)
    assert set(report) == {"n", "n_reference", "w2", "w2_floor"}
    assert report["w2"] == pytest.approx(wasserstein2(samples, ref))
    with pytest.raises(ValueError, match="1 x 8 x 8"):
        quality_report(samples, ref, floor, digits=True)
