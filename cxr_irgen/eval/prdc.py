"""Precision, recall, density and coverage of generated features (Naeem et al., ICML 2020), k = 5.

With Euclidean distances, ``r_k(x)`` the distance from x to its k-th nearest neighbour in its
own set (itself excluded) and B(x, r) the open ball:

- precision: share of generated points inside some real ball ``B(X_i, r_k(X_i))``;
- recall: share of real points inside some generated ball ``B(Y_j, r_k(Y_j))``;
- density: ``1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_k(X_i))]`` (can exceed 1);
- coverage: share of real points whose ball contains at least one generated point.

"Inside" is strict (distance < radius), as in the authors' code. Works on any FID extractor's
features (:mod:`cxr_irgen.eval.features`).
"""

from __future__ import annotations

import numpy as np

NEAREST_K = 5


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, D) × (M, D) → (N, M) Euclidean distances, float64."""
    squared = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(squared, 0.0, None))


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance from each point to its k-th nearest other point of the same set."""
    distances = pairwise_distances(x, x)
    np.fill_diagonal(distances, np.inf)
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def prdc_from_features(generated: np.ndarray, real: np.ndarray, k: int = NEAREST_K) -> dict:
    """``{"precision", "recall", "density", "coverage", "k", "n_generated", "n_real"}`` of (M, D) generated vs (N, D) real features."""
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"PRDC needs (M, D) and (N, D) features, got {generated.shape} and {real.shape}")
    if not np.isfinite(generated).all() or not np.isfinite(real).all():
        raise ValueError("PRDC: the features contain NaN or inf")
    if k < 1 or min(len(generated), len(real)) <= k:
        raise ValueError(f"PRDC with k={k} needs more than k points on each side, got {len(generated)} generated and {len(real)} real")
    real_radii, generated_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(generated, k)
    distances = pairwise_distances(real, generated)  # (N real, M generated)
    in_real_ball = distances < real_radii[:, None]
    return {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float((distances < generated_radii[None, :]).any(axis=1).mean()),
        "density": float(in_real_ball.sum() / (k * len(generated))),
        "coverage": float((distances.min(axis=1) < real_radii).mean()),
        "k": k, "n_generated": len(generated), "n_real": len(real),
    }
