"""Privacy: how close each generated image comes to a training image, in pixels and in features.

For every generated image, the nearest of the searched training images by

- pixel distance: RMS difference ``‖g − t‖₂ / √P`` of gray images in [0, 1] at one resolution (P pixels),
  computed in float64. CheXGenBench's ``pixelwise_distance`` has the same normalisation but on 0–255
  RGB uint8 arrays, whose subtraction wraps around (10 − 250 = 16 in uint8), so its numbers are neither
  distances nor comparable with these (×255 gives its scale, without the wrap);
- feature distance: ``‖f_g − f_t‖₂ / √D`` of the FID extractor's features (D-dim; RAD-DINO's CLS token
  with ``eval.fid.features=rad_dino``), CheXGenBench's ``latent_vector_distance``.

CheXGenBench compares each generated image with the one training image of its prompt; here the nearest
of every searched training image is taken. Reported per distance: quantiles over generated images and the
share (and number) of generated images closer than a stated threshold. The pixel threshold is absolute
(an RMS difference in [0, 1] intensity). A feature distance has no extractor-free scale, so its threshold
is, unless given, a quantile of the training images' own nearest-neighbour distances (leave-one-out):
a generated image under it is closer to a training image than most training images are to any other.
The closest pairs by pixel distance are drawn side by side by :func:`save_privacy_sheet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

QUANTILES = (0.0, 0.05, 0.5, 1.0)


def _flat(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, ...) images or features → (N, P) float64, P = the values per item."""
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    return images.reshape(len(images), -1).to(torch.float64)


def nearest_rms(queries: torch.Tensor | np.ndarray, candidates: torch.Tensor | np.ndarray, exclude_self: bool = False,
                chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(N, ...) queries and (M, ...) candidates of the same shape → index (N,) of the nearest candidate and its RMS distance
    ``‖q − c‖₂ / √P`` (N,), float64. ``exclude_self``: queries are the candidates; an item is not its own neighbour."""
    q, c = _flat(queries), _flat(candidates)
    if q.shape[1] != c.shape[1] or not len(q) or not len(c):
        raise ValueError(f"nearest distance needs (N, P) and (M, P) items, got {tuple(q.shape)} and {tuple(c.shape)}")
    if exclude_self and len(c) < 2:
        raise ValueError("nearest distance excluding self needs at least two items")
    norms = (c * c).sum(1)
    best_index, best_value = np.zeros(len(q), np.int64), np.zeros(len(q))
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        squared = ((block * block).sum(1, keepdim=True) + norms[None] - 2 * block @ c.T).clamp_(min=0)
        if exclude_self:
            squared[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")
        value, index = squared.min(1)
        best_index[start:start + len(block)], best_value[start:start + len(block)] = index.numpy(), value.sqrt().numpy()
    return best_index, best_value / np.sqrt(q.shape[1])


def _summary(distances: np.ndarray, threshold: float, rule: str) -> dict:
    below = distances < threshold
    return {"quantiles": {f"q{round(q * 100)}": float(np.quantile(distances, q)) for q in QUANTILES}, "mean": float(distances.mean()),
            "threshold": float(threshold), "threshold_rule": rule, "share_below": float(below.mean()), "n_below": int(below.sum())}


def privacy_metrics(generated_images: torch.Tensor, training_images: torch.Tensor, generated_features: np.ndarray, training_features: np.ndarray,
                    generated_names: Sequence[str], training_names: Sequence[str], pixel_threshold: float = 0.05,
                    feature_threshold: float | None = None, training_quantile: float = 0.05, top: int = 8) -> dict:
    """Nearest training image of every generated one by pixel RMS and by feature distance; summaries and the closest pairs.

    ``generated_images`` / ``training_images``: (N, 1, S, S) / (M, 1, S, S) in [0, 1]; features (N, D) / (M, D), same rows.
    ``feature_threshold=None``: the ``training_quantile`` quantile of the training images' leave-one-out nearest feature distances.
    """
    if len(generated_features) != len(generated_images) or len(training_features) != len(training_images):
        raise ValueError("privacy: features and images must have the same rows")
    if not len(generated_images) or len(training_images) < 2:
        raise ValueError("privacy: needs at least one generated and two training images")
    pixel_index, pixel = nearest_rms(generated_images, training_images)
    feature_index, feature = nearest_rms(generated_features, training_features)
    if feature_threshold is None:
        _, own = nearest_rms(training_features, training_features, exclude_self=True)
        feature_threshold, rule = float(np.quantile(own, training_quantile)), f"q{training_quantile:g} of training-to-training nearest distances"
    else:
        rule = "given"
    order = np.argsort(pixel, kind="stable")[:top]
    return {
        "n_generated": len(generated_images), "n_training": len(training_images), "resolution": int(generated_images.shape[-1]),
        "pixel_rms": _summary(pixel, pixel_threshold, "given"), "feature_distance": _summary(feature, feature_threshold, rule),
        "definition": "nearest searched training image; pixel: ||g - t||_2 / sqrt(P) of gray [0, 1] float64; features: ||f_g - f_t||_2 / sqrt(D)",
        "closest_pairs": [{"generated": str(generated_names[i]), "training": str(training_names[pixel_index[i]]), "pixel_rms": float(pixel[i]),
                           "nearest_by_features": str(training_names[feature_index[i]]), "feature_distance": float(feature[i])} for i in order],
    }


def privacy_table(result: dict) -> str:
    """Markdown: quantiles of both nearest distances and the share of generated images under each threshold."""
    header = ["distance to the nearest training image", "min", "q5", "median", "mean", "threshold", "share below (n)"]
    rows = []
    for key, name in (("pixel_rms", f"pixel RMS, gray [0, 1], {result['resolution']} px"), ("feature_distance", f"features ({result.get('feature_extractor', '?')}) L2/√D")):
        block = result[key]
        q = block["quantiles"]
        rows.append([name, *(f"{v:.4g}" for v in (q["q0"], q["q5"], q["q50"], block["mean"])),
                     f"{block['threshold']:.4g} ({block['threshold_rule']})", f"{block['share_below']:.4f} ({block['n_below']})"])
    note = (f"Privacy: each of {result['n_generated']} generated images vs its nearest of {result['n_training']} training images "
            f"(float distances, no uint8 wrap-around); closest pairs in privacy_pairs.png.")
    return note + "\n\n" + "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]) + "\n"


def save_privacy_sheet(pairs: Sequence[dict], path: str | Path, size: int = 128) -> Path:
    """One PNG with a row per pair: generated image | its nearest training image by pixels, distances written below."""
    from cxr_irgen.eval.memorisation import save_pair_sheet

    return save_pair_sheet(pairs, path, lambda pair: f"pixel RMS {pair['pixel_rms']:.4f}  feat {pair['feature_distance']:.3g}", size)
