"""Image metrics: Fréchet distance of features, PSNR / SSIM of label-paired images, MS-SSIM diversity.

- FID: ``||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)`` in float64 (:func:`frechet_distance`).
- PSNR and SSIM: gray, data range 1, Gaussian window 11 × 11 with σ 1.5, K = (0.01, 0.03),
  averaged over the valid region (as Wang et al.'s code and skimage); each generated image is paired with a real image of the same full label
  vector (same :func:`~cxr_irgen.data.labels.label_key`), chosen at random by a seed;
  generated images whose label vector has no real image are left out and counted.
- MS-SSIM diversity: mean MS-SSIM over pairs of generated images with the same label
  vector (lower = more diverse). Five scales need images larger than 160 px; smaller
  images use as many scales as fit (``(11 − 1)·2^(s−1) < size``) with the standard
  weights renormalised, and the number of scales is reported; negative contrast terms
  are clipped to 0 (torchmetrics' ``normalize="relu"``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_KERNEL, SSIM_SIGMA = 11, 1.5


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), float64.

    ``Tr((Σ₁Σ₂)^½)`` is computed as ``Σ √λ`` over the eigenvalues λ of the symmetric PSD matrix
    ``Σ₁^½ Σ₂ Σ₁^½`` (same eigenvalues as ``Σ₁Σ₂``): two ``eigh`` calls, exact for singular
    covariances too, and much faster than ``scipy.linalg.sqrtm`` at D = 1024-2048 (the tests
    check it against ``sqrtm``).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid_from_features(generated: np.ndarray, real: np.ndarray) -> float:
    """FID of two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(generated), *feature_statistics(real))


def pair_by_label(generated_keys: Sequence[str], real_keys: Sequence[str], seed: int) -> list[tuple[int, int]]:
    """(generated index, real index) pairs with equal label keys; the real partner is drawn at random (seeded) per image."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for j, key in enumerate(real_keys):
        by_key[key].append(j)
    rng = np.random.default_rng(seed)
    pairs = []
    for i, key in enumerate(generated_keys):
        candidates = by_key.get(key)
        if candidates:
            pairs.append((i, candidates[int(rng.integers(len(candidates)))]))
    return pairs


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) of (B, 1, H, W) images in [0, 1] (data range 1)."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-20))


def _gaussian_window(size: int = SSIM_KERNEL, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _ssim_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps over the valid region (no padding, as Wang et al.'s reference code)."""
    import torch.nn.functional as F

    a, b = a.double(), b.double()
    w = _gaussian_window().to(a.device)
    rows, cols = w.view(1, 1, -1, 1), w.view(1, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, rows), cols)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    return (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs, cs


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (B,) of (B, 1, H, W) images in [0, 1]: Gaussian window 11, σ 1.5, data range 1, valid region."""
    return _ssim_maps(a, b)[0].flatten(1).mean(1)


def ms_ssim_scales(size: int, kernel: int = SSIM_KERNEL) -> int:
    """How many MS-SSIM scales fit an image side of ``size`` (5 from 161 px up)."""
    scales = 5
    while scales > 1 and size <= (kernel - 1) * 2 ** (scales - 1):
        scales -= 1
    return scales


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair MS-SSIM (B,) of (B, 1, H, W) images in [0, 1] with as many scales as the size allows (weights renormalised)."""
    import torch.nn.functional as F

    scales = ms_ssim_scales(min(a.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    a, b = a.double(), b.double()
    factors = []
    for level in range(scales):
        full, cs = _ssim_maps(a, b)
        factors.append((full if level == scales - 1 else cs).flatten(1).mean(1).clamp_min(0.0))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return torch.prod(torch.stack(factors, dim=1) ** weights, dim=1)


def within_label_pairs(keys: Sequence[str], max_pairs_per_label: int, seed: int) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of images sharing a label key; at most ``max_pairs_per_label`` per key, seeded."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    rng = np.random.default_rng(seed)
    pairs = []
    for key in sorted(groups):
        members = groups[key]
        every = [(members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members))]
        if len(every) > max_pairs_per_label:
            every = [every[k] for k in sorted(rng.choice(len(every), max_pairs_per_label, replace=False))]
        pairs.extend(every)
    return pairs
