"""CheXpert F1 of generated reports: both sides labelled by the same labeler, then compared.

Label values are binarised by a named *uncertain mapping*: ``positive_only`` (1 → 1;
0, -1, blank → 0) or ``uncertain_as_positive`` (1, -1 → 1; 0, blank → 0). The reference
report's labels are the ground truth. Averaging: ``micro`` (pooled TP/FP/FN over the
classes) and ``macro`` (mean of per-class F1; a class with no positive on either side
scores 0, as sklearn's ``zero_division=0``), over all 14 observations and over the top 5
(Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion). 95% confidence
intervals by a seeded percentile bootstrap over reports. Zero reports raise ``ValueError``
(an F1 of nothing is undefined, not 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, TOP5_LABELS

MAPPINGS = ("positive_only", "uncertain_as_positive")
SUBSETS = {"14": tuple(range(len(CHEXPERT_LABELS))), "top5": tuple(LABEL_INDEX[n] for n in TOP5_LABELS)}


def binarise(labels: np.ndarray, mapping: str) -> np.ndarray:
    """(N, 14) labels with 1/0/-1/NaN → (N, 14) bool under the named uncertain mapping."""
    if mapping == "positive_only":
        return labels == 1.0
    if mapping == "uncertain_as_positive":
        return (labels == 1.0) | (labels == -1.0)
    raise ValueError(f"unknown uncertain mapping {mapping!r}; use one of {MAPPINGS}")


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=np.float64), where=denominator > 0)


def weighted_f1_scores(weights: np.ndarray, hits: np.ndarray, false_pos: np.ndarray, misses: np.ndarray) -> dict[str, np.ndarray]:
    """Micro/macro F1 over each subset for every row of ``weights`` (B, N): how often each report is drawn."""
    tp, fp, fn = weights @ hits, weights @ false_pos, weights @ misses  # (B, 14)
    out = {}
    for subset, columns in SUBSETS.items():
        cols = list(columns)
        out[f"micro_{subset}"] = f1_from_counts(tp[:, cols].sum(1), fp[:, cols].sum(1), fn[:, cols].sum(1))
        out[f"macro_{subset}"] = f1_from_counts(tp[:, cols], fp[:, cols], fn[:, cols]).mean(1)
    return out


def chexpert_f1(generated: np.ndarray, reference: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, chunk: int = 200) -> dict:
    """F1 of (N, 14) generated vs reference labels for both mappings, micro/macro, 14/top5, with 95% bootstrap CIs.

    Returns ``{mapping: {"micro_14": {"value", "ci95"}, ..., "per_class": {name: f1}}}`` plus
    ``n_reports``, ``n_bootstrap``, ``bootstrap_seed``.
    """
    generated, reference = np.asarray(generated, dtype=np.float32), np.asarray(reference, dtype=np.float32)
    if generated.shape != reference.shape or generated.ndim != 2 or generated.shape[1] != len(CHEXPERT_LABELS):
        raise ValueError(f"need two (N, 14) label arrays, got {generated.shape} and {reference.shape}")
    n = len(generated)
    if n == 0:
        raise ValueError("CheXpert F1 of 0 reports is undefined: no rows to score")
    result: dict = {"n_reports": n, "n_bootstrap": n_bootstrap, "bootstrap_seed": seed}
    for mapping in MAPPINGS:
        g, r = binarise(generated, mapping).astype(np.float64), binarise(reference, mapping).astype(np.float64)
        hits, false_pos, misses = g * r, g * (1 - r), (1 - g) * r
        point = weighted_f1_scores(np.ones((1, n)), hits, false_pos, misses)
        rng = np.random.default_rng(seed)
        draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
        for start in range(0, n_bootstrap, chunk):
            size = min(chunk, n_bootstrap - start)
            picks = rng.integers(0, n, size=(size, n))
            weights = np.zeros((size, n))
            np.add.at(weights, (np.repeat(np.arange(size), n), picks.ravel()), 1.0)
            for k, v in weighted_f1_scores(weights, hits, false_pos, misses).items():
                draws[k].append(v)
        block = {}
        for k, v in point.items():
            samples = np.concatenate(draws[k]) if n_bootstrap else np.array([])
            ci = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if n_bootstrap else None
            block[k] = {"value": float(v[0]), "ci95": ci}
        per_class = f1_from_counts(hits.sum(0), false_pos.sum(0), misses.sum(0))
        block["per_class"] = {name: float(f) for name, f in zip(CHEXPERT_LABELS, per_class)}
        result[mapping] = block
    return result


def chexpert_f1_reports(generated: Sequence[str], references: Sequence[str], labeler_kwargs: dict | None = None, **kwargs) -> dict:
    """Label generated and reference reports with the same labeler, then :func:`chexpert_f1`."""
    from cxr_irgen.text.labeler import label_reports

    labeler_kwargs = labeler_kwargs or {}
    return chexpert_f1(label_reports(list(generated), **labeler_kwargs), label_reports(list(references), **labeler_kwargs), **kwargs)
