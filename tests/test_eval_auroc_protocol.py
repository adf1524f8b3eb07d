"""The paper's AUROC protocol as a unit: groups (positives vs No Finding), the cap N, the seed, aliases, and the
AUROC values against sklearn computed here from the labels directly (the control)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX
from cxr_irgen.errors import UserError
from cxr_irgen.eval.auroc import PAPER_PATHOLOGIES, needed_indices, output_index, protocol_auroc, protocol_groups

XRV_PATHOLOGIES = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion", "Pneumonia",
                   "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum"]


def _labels(n: int = 300, seed: int = 0) -> np.ndarray:
    """(n, 14): each observation 1.0 / 0.0 / -1.0 / blank; No Finding 1.0 for a third of the rows."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32), size=(n, len(CHEXPERT_LABELS)), p=[0.2, 0.3, 0.2, 0.3])
    no_finding = rng.random(n) < 1 / 3
    labels[:, LABEL_INDEX["No Finding"]] = np.where(no_finding, 1.0, np.nan)
    consistent = no_finding & (np.arange(n) % 7 != 0)  # every 7th No Finding row keeps its findings: a contradictory label
    findings = [LABEL_INDEX[name] for name in CHEXPERT_LABELS if name not in ("No Finding", "Support Devices")]
    labels[np.ix_(consistent, findings)] = np.where(labels[np.ix_(consistent, findings)] == 1.0, 0.0, labels[np.ix_(consistent, findings)])
    return labels


def _no_finding(labels: np.ndarray) -> np.ndarray:
    """No Finding rows without a positive finding (Support Devices may be positive)."""
    findings = [LABEL_INDEX[name] for name in CHEXPERT_LABELS if name not in ("No Finding", "Support Devices")]
    return np.flatnonzero((labels[:, LABEL_INDEX["No Finding"]] == 1.0) & ~(labels[:, findings] == 1.0).any(axis=1))


def test_groups_are_exactly_the_positives_and_no_finding_rows():
    labels = _labels()
    groups = protocol_groups(labels, PAPER_PATHOLOGIES, n=10_000, seed=0)
    no_finding = _no_finding(labels)
    assert 0 < len(no_finding) < (labels[:, LABEL_INDEX["No Finding"]] == 1.0).sum()
    assert list(groups) == list(PAPER_PATHOLOGIES)
    for pathology, canonical in zip(PAPER_PATHOLOGIES, ("Atelectasis", "Cardiomegaly", "Lung Opacity", "Pleural Effusion", "Pneumonia")):
        positive, negative = groups[pathology]
        np.testing.assert_array_equal(positive, np.flatnonzero(labels[:, LABEL_INDEX[canonical]] == 1.0))  # uncertain (-1) is not positive
        np.testing.assert_array_equal(negative, no_finding)
    assert set(needed_indices(groups)) == {int(i) for pair in groups.values() for idx in pair for i in idx}


def test_cap_and_seed():
    labels = _labels(600)
    capped = protocol_groups(labels, ["Cardiomegaly", "Effusion"], n=20, seed=3)
    full = protocol_groups(labels, ["Cardiomegaly", "Effusion"], n=10_000, seed=3)
    for pathology in capped:
        for small, everything in zip(capped[pathology], full[pathology]):
            assert len(small) == 20 and len(set(small)) == 20 and set(small) <= set(everything) and list(small) == sorted(small)
    again = protocol_groups(labels, ["Cardiomegaly", "Effusion"], n=20, seed=3)
    other = protocol_groups(labels, ["Cardiomegaly", "Effusion"], n=20, seed=4)
    assert all(np.array_equal(a, b) for k in capped for a, b in zip(capped[k], again[k]))
    assert not all(np.array_equal(a, b) for k in capped for a, b in zip(capped[k], other[k]))


def test_auroc_matches_sklearn_on_the_raw_scores():
    labels = np.concatenate([_labels(), _labels(300, seed=5)])
    rng = np.random.default_rng(1)
    # Scores: the classifier's outputs in its own column order (torchxrayvision names), informative but noisy.
    scores = {}
    for i, row in enumerate(labels):
        out = rng.normal(size=len(XRV_PATHOLOGIES))
        for j, name in enumerate(XRV_PATHOLOGIES):
            canonical = {"Effusion": "Pleural Effusion"}.get(name, name)
            if canonical in LABEL_INDEX and row[LABEL_INDEX[canonical]] == 1.0:
                out[j] += 1.0
        scores[i] = out
    groups = protocol_groups(labels, PAPER_PATHOLOGIES, n=40, seed=0)
    result = protocol_auroc({int(i): scores[int(i)] for i in needed_indices(groups)}, groups, XRV_PATHOLOGIES)
    expected = []
    for pathology, (positive, negative) in groups.items():
        column = XRV_PATHOLOGIES.index(pathology)  # the paper's names are XRV's names
        y = [1] * len(positive) + [0] * len(negative)
        value = roc_auc_score(y, [scores[int(i)][column] for i in [*positive, *negative]])
        assert result["per_pathology"][pathology] == {"n_positive": 40, "n_no_finding": 40, "auroc": pytest.approx(value, abs=1e-12)}
        assert 0.6 < value < 1.0  # the scores carry the label: a wrong column or pairing would sit near 0.5
        expected.append(value)
    assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-12)


def test_empty_group_is_none_and_left_out_of_the_mean():
    labels = _labels(60)
    labels[:, LABEL_INDEX["Pneumonia"]] = 0.0
    groups = protocol_groups(labels, ["Cardiomegaly", "Pneumonia"], n=500, seed=0)
    scores = {i: np.random.default_rng(i).normal(size=len(XRV_PATHOLOGIES)) for i in range(len(labels))}
    result = protocol_auroc(scores, groups, XRV_PATHOLOGIES)
    assert result["per_pathology"]["Pneumonia"]["auroc"] is None and result["per_pathology"]["Pneumonia"]["n_positive"] == 0
    assert result["mean"] == result["per_pathology"]["Cardiomegaly"]["auroc"] is not None


def test_aliases_and_missing_outputs():
    assert output_index(XRV_PATHOLOGIES, "Pleural Effusion") == XRV_PATHOLOGIES.index("Effusion")
    assert output_index(list(CHEXPERT_LABELS), "Effusion") == LABEL_INDEX["Pleural Effusion"]
    assert output_index(["Hernia", "lung opacity"], "opacity") == 1
    with pytest.raises(UserError, match="no output for 'Pneumonia'; its pathologies: Hernia, Nodule"):
        output_index(["Hernia", "Nodule"], "Pneumonia")
    with pytest.raises(UserError, match="unknown label 'Heart'"):
        protocol_groups(_labels(10), ["Heart"], n=5, seed=0)
