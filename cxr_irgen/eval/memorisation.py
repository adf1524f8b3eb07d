"""Memorisation: the training image nearest to each generated image, in feature space and in pixel space.

The image counterpart of the report copy guard (:mod:`cxr_irgen.eval.report_guards`):

- feature space: cosine similarity of the FID extractor's features (:mod:`cxr_irgen.eval.features`);
  the nearest training image is the one of highest cosine;
- pixel space: SSIM (:func:`~cxr_irgen.eval.image_metrics.ssim`: gray, Gaussian window 11, σ 1.5,
  data range 1) against every training image at one resolution; the nearest is the one of
  highest SSIM.

Reported: quantiles of both nearest-neighbour similarities over generated images and the share
above each one's threshold; the top pairs by SSIM, which :func:`save_pairs_figure` draws side by
side (generated | training). A generated image is *flagged* as a copy when its SSIM exceeds
``ssim_threshold``: pixel similarity means the same thing whatever the extractor, while cosines
of one extractor's features (all near 1 for an untrained one) only compare within that extractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

QUANTILES = (0.0, 0.5, 0.95, 1.0)


def nearest_by_cosine(generated: np.ndarray, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) generated and (M, D) training features → index (N,) of the most cosine-similar training row and that cosine (N,)."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)

    similarity = unit(generated) @ unit(training).T
    index = similarity.argmax(axis=1)
    return index, similarity[np.arange(len(index)), index]


def nearest_by_ssim(generated: torch.Tensor, training: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, S, S) and (M, 1, S, S) in [0, 1] → index (N,) of the highest-SSIM training image and that SSIM (N,)."""
    from cxr_irgen.eval.image_metrics import SSIMIndex
    from cxr_irgen.utils.progress import progress_bar

    index = SSIMIndex(training, chunk)
    best = [index(image) for image in progress_bar(generated, desc="memorisation: SSIM search", leave=False)]
    return np.array([int(s.argmax()) for s in best]), np.array([float(s.max()) for s in best])


def _summary(values: np.ndarray, threshold: float) -> dict:
    return {"quantiles": {f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES},
            "threshold": threshold, "share_above": float((values > threshold).mean()), "n_above": int((values > threshold).sum())}


def nearest_training_images(generated_features: np.ndarray, training_features: np.ndarray, generated_images: torch.Tensor, training_images: torch.Tensor,
                 generated_names: Sequence[str], training_names: Sequence[str], cosine_threshold: float = 0.95,
                 ssim_threshold: float = 0.9, top: int = 8) -> dict:
    """Nearest training image of every generated one by feature cosine and by SSIM; summaries, flagged items and top pairs.

    ``generated_images`` / ``training_images``: (N, 1, S, S) / (M, 1, S, S) in [0, 1], the same rows as the features.
    """
    if len(generated_features) != len(generated_images) or len(training_features) != len(training_images):
        raise ValueError("memorisation: features and images must have the same rows")
    if not len(generated_images) or not len(training_images):
        raise ValueError("memorisation: needs at least one generated and one training image")
    cos_index, cos_value = nearest_by_cosine(generated_features, training_features)
    ssim_index, ssim_value = nearest_by_ssim(generated_images, training_images)
    flagged = np.flatnonzero(ssim_value > ssim_threshold)
    order = np.argsort(-ssim_value, kind="stable")[:top]
    return {
        "n_generated": len(generated_images), "n_training": len(training_images), "ssim_resolution": int(generated_images.shape[-1]),
        "feature_cosine": _summary(cos_value, cosine_threshold), "ssim": _summary(ssim_value, ssim_threshold),
        "flagged": [str(generated_names[i]) for i in flagged],
        "top_pairs": [{"generated": str(generated_names[i]), "training": str(training_names[ssim_index[i]]), "ssim": float(ssim_value[i]),
                       "nearest_by_features": str(training_names[cos_index[i]]), "feature_cosine": float(cos_value[i])} for i in order],
    }


def save_pair_sheet(pairs: Sequence[dict], path: str | Path, caption: Callable[[dict], str], size: int = 128) -> Path:
    """One PNG with a row per pair: ``pair["generated"]`` | ``pair["training"]`` (image paths), ``caption(pair)`` below."""
    from PIL import Image, ImageDraw

    from cxr_irgen.data.imageio import read_image

    line = 14
    sheet = Image.new("L", (2 * size, max(1, len(pairs)) * (size + line)), color=255)
    draw = ImageDraw.Draw(sheet)
    for row, pair in enumerate(pairs):
        top = row * (size + line)
        for column, key in enumerate(("generated", "training")):
            pixels = (read_image(pair[key], size)[0].numpy() * 255).round().astype(np.uint8)
            sheet.paste(Image.fromarray(pixels), (column * size, top))
        draw.text((2, top + size + 1), caption(pair), fill=0)
    path = Path(path)
    sheet.save(path)
    return path


def save_pairs_figure(pairs: Sequence[dict], path: str | Path, size: int = 128) -> Path:
    """The memorisation sheet: generated image | its highest-SSIM training image, SSIM and feature cosine below."""
    return save_pair_sheet(pairs, path, lambda pair: f"SSIM {pair['ssim']:.3f}  cos {pair['feature_cosine']:.3f}", size)
