"""The paper's classifier AUROC protocol (CXR-IRGen Tab. 2).

For each pathology (default Atelectasis, Cardiomegaly, Lung Opacity, Effusion,
Pneumonia): up to N images labelled positive for it vs up to N images labelled No Finding
(N = 500 in the paper), drawn at random with a seed; the classifier's output for that
pathology scores them; AUROC by ``sklearn.metrics.roc_auc_score`` on the raw scores (never
thresholded). The mean is over pathologies with both groups non-empty. The same protocol
runs on generated images (labels = their conditioning labels) and on real test images
(labels = the data set's labels) for reference.

Contradictory labels: an image labelled No Finding *and* positive for a finding (any
observation but No Finding and Support Devices, which CheXpert allows alongside No
Finding) is not a No Finding image; it can only enter the positive group of that finding.
Their number is reported as ``n_no_finding_conflicting``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cxr_irgen.data.labels import LABEL_INDEX, canonical_name
from cxr_irgen.errors import UserError

PAPER_PATHOLOGIES = ("Atelectasis", "Cardiomegaly", "Lung Opacity", "Effusion", "Pneumonia")
NO_FINDING = LABEL_INDEX["No Finding"]
FINDINGS = [i for name, i in LABEL_INDEX.items() if name not in ("No Finding", "Support Devices")]


def no_finding_rows(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Indices of (N, 14) ``labels`` with No Finding = 1 and no positive finding; and how many No Finding rows had one."""
    labelled = labels[:, NO_FINDING] == 1.0
    with_finding = (labels[:, FINDINGS] == 1.0).any(axis=1)
    return np.flatnonzero(labelled & ~with_finding), int((labelled & with_finding).sum())


def protocol_groups(labels: np.ndarray, pathologies: Sequence[str], n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{pathology: (positive indices, No Finding indices)}`` into (N, 14) ``labels``, each at most ``n``, seeded.

    No Finding rows that also carry a positive finding are left out (module docstring).
    """
    rng = np.random.default_rng(seed)
    no_finding, _ = no_finding_rows(labels)
    groups = {}
    for pathology in pathologies:
        positive = np.flatnonzero(labels[:, LABEL_INDEX[canonical_name(pathology)]] == 1.0)
        pick = lambda idx: np.sort(rng.choice(idx, n, replace=False)) if len(idx) > n else idx
        groups[pathology] = (pick(positive), pick(no_finding))
    return groups


def output_index(classifier_pathologies: Sequence[str], pathology: str) -> int:
    """Column of ``pathology`` among the classifier's outputs (names compared as CheXpert observations)."""
    want = canonical_name(pathology)
    for i, name in enumerate(classifier_pathologies):
        try:
            if canonical_name(name) == want:
                return i
        except UserError:
            continue
    raise UserError(f"the classifier has no output for {pathology!r}; its pathologies: {', '.join(classifier_pathologies)}")


def protocol_auroc(scores: dict[int, np.ndarray], groups: dict[str, tuple[np.ndarray, np.ndarray]], classifier_pathologies: Sequence[str]) -> dict:
    """AUROC per pathology and mean, from ``scores[image index] = classifier outputs (P,)``."""
    from sklearn.metrics import roc_auc_score

    out: dict = {"per_pathology": {}}
    values = []
    for pathology, (positive, negative) in groups.items():
        column = output_index(classifier_pathologies, pathology)
        entry = {"n_positive": int(len(positive)), "n_no_finding": int(len(negative)), "auroc": None}
        if len(positive) and len(negative):
            y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
            s = np.array([scores[int(i)][column] for i in np.r_[positive, negative]], dtype=np.float64)
            entry["auroc"] = float(roc_auc_score(y, s))
            values.append(entry["auroc"])
        out["per_pathology"][pathology] = entry
    out["mean"] = float(np.mean(values)) if values else None
    return out


def needed_indices(groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Sorted union of every image index the protocol scores (run the classifier on these only)."""
    parts = [idx for pair in groups.values() for idx in pair]
    return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=int)
