"""KID against torch-fidelity's own routine; precision/recall/density/coverage on constructed point sets with known answers
and against a plain loop over the published formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_irgen.eval import kid_from_features, prdc_from_features  # the public API
from cxr_irgen.eval.kid import mmd2_unbiased


def test_kid_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(0)
    generated, real = rng.normal(0.2, 1.0, size=(120, 16)), rng.normal(0.0, 1.3, size=(90, 16))
    ours = kid_from_features(generated, real, subset_size=50, subsets=20, seed=7)
    theirs = kid_features_to_metric(torch.from_numpy(generated), torch.from_numpy(real), kid_subsets=20, kid_subset_size=50, rng_seed=7,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, verbose=False)
    assert ours["mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert ours["std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-10)
    assert ours["subset_size"] == 50 and ours["subsets"] == 20 and ours["mean"] > 0


def test_unbiased_mmd_matches_a_double_loop_and_is_centred_on_zero_for_one_distribution():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    m = len(x)
    expected = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
                - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)
    same = kid_from_features(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), subset_size=100, subsets=50)
    shifted = kid_from_features(rng.normal(size=(400, 4)), rng.normal(1.0, 1.0, size=(400, 4)), subset_size=100, subsets=50)
    assert abs(same["mean"]) < 3 * same["std"] and shifted["mean"] > 10 * same["std"]


def test_kid_refuses_subsets_larger_than_the_sets_and_non_finite_features():
    with pytest.raises(ValueError, match="subset_size=50"):
        kid_from_features(np.zeros((40, 2)), np.zeros((60, 2)), subset_size=50)
    with pytest.raises(ValueError, match="NaN"):
        kid_from_features(np.full((10, 2), np.nan), np.zeros((10, 2)), subset_size=5)


def _simplex(centre_shift: float, edge: float, axis: int = 0) -> np.ndarray:
    """6 points with all pairwise distances ``edge`` (scaled basis vectors of R^6), translated along ``axis``."""
    points = np.eye(6) * edge / np.sqrt(2)
    points[:, axis] += centre_shift
    return points


def test_prdc_on_constructed_clusters_with_known_answers():
    """Real: 4 clusters of 6 equidistant points (edge 1, so every real k=5 radius is exactly 1; circumradius 0.645).
    Generated: cluster 0 shrunk ×0.9 about its centre (all 6 real balls hold each point; generated radius 0.9 reaches
    the real points 0.065 away), a tiny simplex (edge 0.1) at cluster 1's centre (in all 6 real balls; its radius 0.1
    reaches no real point, but every real point of cluster 1 has it within 0.6 < 1), nothing near clusters 2-3,
    and 6 outliers far away. So precision 12/18, recall 6/24, density 12·6/(5·18), coverage 12/24."""
    real = np.concatenate([_simplex(100.0 * t, 1.0) for t in range(4)])
    centre = real[:6].mean(0)
    shrunk = centre + 0.9 * (real[:6] - centre)
    tiny = _simplex(100.0, 0.1) - _simplex(100.0, 0.1).mean(0) + real[6:12].mean(0)
    outliers = _simplex(1000.0, 1.0, axis=2)
    result = prdc_from_features(np.concatenate([shrunk, tiny, outliers]), real, k=5)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(1 / 4)
    assert result["density"] == pytest.approx(0.8)
    assert result["coverage"] == pytest.approx(0.5)
    identical = prdc_from_features(real, real, k=5)
    assert identical["precision"] == identical["recall"] == identical["coverage"] == 1.0


def test_prdc_matches_a_plain_loop_over_the_published_formulas():
    rng = np.random.default_rng(3)
    real, fake, k = rng.normal(size=(40, 3)), rng.normal(1.2, 0.8, size=(30, 3)), 5
    dist = lambda a, b: float(np.sqrt(((a - b) ** 2).sum()))
    radius = lambda p, pool: sorted(dist(p, q) for q in pool)[k]  # sorted[0] is the point itself
    r_real, r_fake = [radius(x, real) for x in real], [radius(y, fake) for y in fake]
    expected = {
        "precision": np.mean([any(dist(y, x) < r for x, r in zip(real, r_real)) for y in fake]),
        "recall": np.mean([any(dist(x, y) < r for y, r in zip(fake, r_fake)) for x in real]),
        "density": sum(dist(y, x) < r for y in fake for x, r in zip(real, r_real)) / (k * len(fake)),
        "coverage": np.mean([min(dist(x, y) for y in fake) < r for x, r in zip(real, r_real)]),
    }
    result = prdc_from_features(fake, real, k=k)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert all(0 < result[key] < 1 for key in ("precision", "recall", "coverage")), result


def test_prdc_needs_more_than_k_points():
    with pytest.raises(ValueError, match="more than k points"):
        prdc_from_features(np.zeros((5, 2)), np.zeros((10, 2)), k=5)
