"""CheXpert F1: micro/macro over 14 and top 5, both uncertain mappings, vs sklearn; bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cxr_irgen.data.labels import LABEL_INDEX, TOP5_LABELS
from cxr_irgen.text.chexpert_f1 import chexpert_f1, chexpert_f1_reports


def _random_labels(rng, n):
    values = np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32)
    return values[rng.choice(4, size=(n, 14), p=[0.2, 0.3, 0.1, 0.4])]


@pytest.mark.parametrize("mapping,positive", [("positive_only", (1.0,)), ("uncertain_as_positive", (1.0, -1.0))])
def test_f1_matches_sklearn(mapping, positive):
    rng = np.random.default_rng(0)
    reference = _random_labels(rng, 300)
    generated = np.where(rng.random((300, 14)) < 0.6, reference, _random_labels(rng, 300))
    generated[:, LABEL_INDEX["Fracture"]] = np.nan  # a class never predicted
    out = chexpert_f1(generated, reference, n_bootstrap=50)[mapping]
    y_true, y_pred = np.isin(reference, positive), np.isin(generated, positive)
    top5 = [LABEL_INDEX[n] for n in TOP5_LABELS]
    for average in ("micro", "macro"):
        assert out[f"{average}_14"]["value"] == pytest.approx(f1_score(y_true, y_pred, average=average, zero_division=0))
        assert out[f"{average}_top5"]["value"] == pytest.approx(f1_score(y_true[:, top5], y_pred[:, top5], average=average, zero_division=0))
    assert out["per_class"]["Fracture"] == 0.0


def test_bootstrap_is_seeded_brackets_the_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    reference = _random_labels(rng, 2000)
    generated = np.where(rng.random((2000, 14)) < 0.5, reference, _random_labels(rng, 2000))
    small = chexpert_f1(generated[:100], reference[:100], n_bootstrap=300, seed=3)
    again = chexpert_f1(generated[:100], reference[:100], n_bootstrap=300, seed=3)
    large = chexpert_f1(generated, reference, n_bootstrap=300, seed=3)
    assert small == again
    for result in (small, large):
        block = result["uncertain_as_positive"]["micro_14"]
        assert block["ci95"][0] <= block["value"] <= block["ci95"][1]
    width = lambda r: np.diff(r["positive_only"]["macro_top5"]["ci95"])[0]
    assert width(large) < width(small) / 2


def test_reports_are_labelled_by_the_same_labeler():
    references = ["Mild cardiomegaly. No effusion.", "Small left pleural effusion.", "Possible pneumonia."]
    perfect = chexpert_f1_reports(references, references, n_bootstrap=10)
    assert perfect["positive_only"]["micro_14"]["value"] == 1.0
    swapped = chexpert_f1_reports(references[::-1], references, n_bootstrap=10)
    assert swapped["positive_only"]["micro_top5"]["value"] < 1.0
    # "possible pneumonia" is uncertain: it counts only when uncertain maps to positive
    only = chexpert_f1_reports(["Possible pneumonia."], ["Pneumonia."], n_bootstrap=0)
    assert only["positive_only"]["per_class"]["Pneumonia"] == 0.0 and only["uncertain_as_positive"]["per_class"]["Pneumonia"] == 1.0
