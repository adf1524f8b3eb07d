"""Kernel Inception Distance (Bińkowski et al. 2018) of two feature sets, torch-fidelity's protocol.

KID is the unbiased estimate of MMD² with the cubic polynomial kernel
``k(x, y) = (x·y / D + 1)³`` (D = feature dimension), averaged over ``subsets`` random
subsets of ``subset_size`` features drawn without replacement from each side; mean and
population std over the subsets are reported. Subsets are drawn as torch-fidelity draws
them (``np.random.RandomState(seed)``, generated subset then real subset, per round), so
the same features and seed give torch-fidelity's number. Works on any FID extractor's
features (:mod:`cxr_irgen.eval.features`).
"""

from __future__ import annotations

import numpy as np

SUBSETS, SUBSET_SIZE, DEGREE, COEF0 = 100, 1000, 3, 1.0


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = DEGREE, gamma: float | None = None, coef0: float = COEF0) -> np.ndarray:
    """(N, D) × (M, D) → (N, M) ``(γ x·y + c)^d`` with γ = 1/D by default, float64."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased MMD² of two equal-size samples (m, D): mean off-diagonal k(x,x') + k(y,y') − 2 mean k(x,y)."""
    m = len(x)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x, **kernel), polynomial_kernel(y, y, **kernel), polynomial_kernel(x, y, **kernel)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kid_from_features(generated: np.ndarray, real: np.ndarray, subset_size: int = SUBSET_SIZE, subsets: int = SUBSETS, seed: int = 2020,
                      degree: int = DEGREE, gamma: float | None = None, coef0: float = COEF0) -> dict:
    """KID of (N, D) generated vs (M, D) real features: ``{"mean", "std", "subset_size", "subsets", "kernel"}``.

    ``subset_size`` must not exceed either set (torch-fidelity's rule); at least 2.
    """
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"KID needs (N, D) and (M, D) features, got {generated.shape} and {real.shape}")
    if not np.isfinite(generated).all() or not np.isfinite(real).all():
        raise ValueError("KID: the features contain NaN or inf")
    if not 2 <= subset_size <= min(len(generated), len(real)):
        raise ValueError(f"KID subset_size={subset_size} must be in [2, min(N, M) = {min(len(generated), len(real))}]")
    if subsets < 1:
        raise ValueError(f"KID subsets={subsets} must be >= 1")
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        g = generated[rng.choice(len(generated), subset_size, replace=False)]
        r = real[rng.choice(len(real), subset_size, replace=False)]
        values.append(mmd2_unbiased(g, r, degree=degree, gamma=gamma, coef0=coef0))
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "subset_size": subset_size, "subsets": subsets,
            "kernel": f"polynomial degree {degree}, gamma {'1/D' if gamma is None else gamma}, coef0 {coef0}"}
