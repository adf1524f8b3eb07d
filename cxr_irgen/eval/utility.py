"""Downstream utility: does a classifier trained with synthetic images do as well on real test images?

The project's classifier (an XRV ``DenseNet``, ``train-classifier``'s masked BCE loss and the
shared trainer) is trained, with the same architecture, steps and seed, on each training set:

- ``real``: the real frontal training images of ``data`` (their own labels);
- ``synthetic``: the generated images, labelled by the label vectors they were generated from;
- ``real+synthetic@r``: the real images plus ``r × N_real`` generated ones (a seeded draw, with
  repetition only when r × N_real exceeds the generated set), for each ratio r.

Each model scores the real test images; per class (the observations with at least one positive
and one negative test image; uncertain test labels excluded from that class), AUROC
(:func:`rank_auroc`, equal to ``sklearn.metrics.roc_auc_score``) with a 95% percentile
bootstrap CI over test images (a draw missing a positive or a negative for a class is
skipped for it), and the mean over classes with its own CI (the mean of each draw). :func:`cxr_irgen.eval.tables.utility_table` writes the one table.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)


def rank_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC of bool labels (N,) and scores (N,) as the Mann-Whitney U over average ranks (ties count ½): sklearn's value, fast."""
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    return float((rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))


def bootstrap_auroc(labels: np.ndarray, scores: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Per-class and mean AUROC with 95% CIs of (N, 14) test ``labels`` (1 / 0 / -1 / NaN) and (N, 14) ``scores``.

    Positive: 1; negative: 0 or blank; uncertain (-1): left out of that class.
    """
    known = labels != -1.0
    positive = labels == 1.0
    classes = [c for c in range(labels.shape[1]) if positive[known[:, c], c].any() and (~positive[known[:, c], c]).any()]
    if not classes:
        raise ValueError("utility: no class has both a positive and a negative real test image")
    point = {c: rank_auroc(positive[known[:, c], c], scores[known[:, c], c]) for c in classes}
    rng = np.random.default_rng(seed)
    draws = {c: [] for c in classes}
    means = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(labels), len(labels))
        values = []
        for c in classes:
            rows = pick[known[pick, c]]
            y = positive[rows, c]
            if y.any() and not y.all():
                values.append(rank_auroc(y, scores[rows, c]))
                draws[c].append(values[-1])
        if len(values) == len(classes):
            means.append(float(np.mean(values)))
    ci = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else None
    per_class = {CHEXPERT_LABELS[c]: {"auroc": point[c], "ci95": ci(draws[c]), "n_positive": int(positive[known[:, c], c].sum())} for c in classes}
    return {"per_class": per_class, "mean": {"auroc": float(np.mean(list(point.values()))), "ci95": ci(means)}}


def training_sets(real: pd.DataFrame, synthetic: pd.DataFrame, ratios, synthetic_only: bool, seed: int) -> dict[str, pd.DataFrame]:
    """``{name: table}`` of image_path + 14 label columns: real, synthetic, real+synthetic@r for each ratio."""
    sets = {"real": real}
    if synthetic_only:
        sets["synthetic"] = synthetic
    rng = np.random.default_rng(seed)
    for ratio in ratios:
        n = int(round(float(ratio) * len(real)))
        pick = rng.choice(len(synthetic), n, replace=n > len(synthetic))
        sets[f"real+synthetic@{float(ratio):g}"] = pd.concat([real, synthetic.iloc[np.sort(pick)]], ignore_index=True)
    return sets


def train_classifier(table: pd.DataFrame, cfg, seed: int, run_dir: Path):
    """An XRV DenseNet trained on ``table`` (image_path + label columns) under ``cfg`` (classifier, resolution, trainer, uncertain, blank)."""
    from omegaconf import OmegaConf

    from cxr_irgen.eval.classifier import Classifier, ClassifierDataset, build_densenet, masked_bce_loss
    from cxr_irgen.utils.training import make_accelerator, train

    arch = OmegaConf.to_container(cfg.classifier, resolve=True)
    dataset = ClassifierDataset(table, int(cfg.resolution), str(cfg.uncertain), str(cfg.blank))
    accelerator = make_accelerator(cfg.trainer, seed)
    model = build_densenet(arch, len(CHEXPERT_LABELS))
    train(accelerator, model, dataset, masked_bce_loss, cfg.trainer, run_dir, seed)
    return Classifier(accelerator.unwrap_model(model).cpu().eval(), list(CHEXPERT_LABELS), int(cfg.resolution), run_dir.name, arch)


def score_images(classifier, paths: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 14) classifier outputs for the images at ``paths``."""
    from cxr_irgen.data.imageio import read_image

    out = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([read_image(p, classifier.resolution) for p in paths[start:start + batch_size]])
        out.append(classifier.logits(images).numpy())
    return np.concatenate(out)


def downstream_utility(real_train: pd.DataFrame, synthetic: pd.DataFrame, real_test: pd.DataFrame, cfg, seed: int) -> dict:
    """Train on each training set (:func:`training_sets`), score the real test images; one result per training set.

    Tables: ``image_path`` + the 14 CheXpert label columns. ``cfg``: ``eval.utility``.
    """
    if synthetic.empty:
        raise UserError("eval.metrics has utility but no generated image carries labels (JSON sidecars or pairs.jsonl with labels)")
    if real_train.empty or real_test.empty:
        raise UserError("utility needs real frontal images in both the train and the test split of data")
    test_labels = real_test[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    rows = []
    sets = training_sets(real_train, synthetic, list(cfg.ratios), bool(cfg.synthetic_only), seed)
    with tempfile.TemporaryDirectory(prefix="cxr-irgen-utility-") as scratch:
        for name, table in sets.items():
            n_real = min(len(table), len(real_train)) if name != "synthetic" else 0
            log.info("utility: training on %s (%d images)", name, len(table))
            classifier = train_classifier(table, cfg, seed, Path(scratch) / name.replace("@", "_").replace("+", "_"))
            scores = score_images(classifier, real_test["image_path"].tolist())
            rows.append({"training_set": name, "n_real": n_real, "n_synthetic": len(table) - n_real,
                         **bootstrap_auroc(test_labels, scores, int(cfg.n_bootstrap), seed)})
    return {"rows": rows, "n_test": len(real_test), "resolution": int(cfg.resolution), "steps": int(cfg.trainer.max_steps),
            "classifier": f"xrv densenet {dict(cfg.classifier)}", "n_bootstrap": int(cfg.n_bootstrap), "seed": seed,
            "test": "real test split, frontal; uncertain test labels left out per class"}

