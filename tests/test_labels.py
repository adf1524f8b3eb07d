"""Labels and prompts: the prompt round trip on every CheXpert label vector, user label strings, keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_irgen.data.iu_xray import xrv_data_file
from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, label_key, labels_from_key, labels_from_row, labels_to_prompt, parse_labels, positive_key, prompt_to_labels
from cxr_irgen.errors import UserError


@pytest.fixture(scope="module")
def chexpert_vectors() -> np.ndarray:
    table = pd.read_csv(xrv_data_file("chexpert_train.csv.gz"), usecols=list(CHEXPERT_LABELS))
    return table[list(CHEXPERT_LABELS)].drop_duplicates().to_numpy(np.float32)


def test_prompt_round_trip_on_every_chexpert_vector(chexpert_vectors):
    assert len(chexpert_vectors) > 1000
    prompts = [labels_to_prompt(vector) for vector in chexpert_vectors]
    np.testing.assert_array_equal(np.stack([prompt_to_labels(p) for p in prompts]), chexpert_vectors)
    np.testing.assert_array_equal(np.stack([parse_labels(format_labels(v)) for v in chexpert_vectors]), chexpert_vectors)
    np.testing.assert_array_equal(np.stack([labels_from_key(label_key(v)) for v in chexpert_vectors]), chexpert_vectors)
    assert len(set(prompts)) == len(chexpert_vectors)  # distinct vectors give distinct prompts


def test_prompt_template():
    vector = parse_labels("Cardiomegaly=1, Edema=1, Pneumonia=1, Pleural Effusion=0, Fracture=0, Atelectasis=-1")
    assert labels_to_prompt(vector) == "A chest X-Ray image with cardiomegaly, edema and pneumonia, without pleural effusion and fracture, and unclear about atelectasis"
    assert labels_to_prompt(parse_labels("Edema=0")) == "A chest X-Ray image without edema"
    assert labels_to_prompt(np.full(14, np.nan)) == "A chest X-Ray image"
    assert labels_to_prompt(parse_labels("Edema=1, Fracture=-1")) == "A chest X-Ray image with edema, and unclear about fracture"


def test_prompt_two_groups_follow_the_paper_template():
    """The paper's "with ..., without ..., and unclear about ...": no "and" before "without" (issue 10 item 7)."""
    assert labels_to_prompt(parse_labels("Cardiomegaly=1, Edema=0")) == "A chest X-Ray image with cardiomegaly, without edema"
    assert labels_to_prompt(parse_labels("Edema=0, Fracture=-1")) == "A chest X-Ray image without edema, and unclear about fracture"
    assert labels_to_prompt(parse_labels("Fracture=-1")) == "A chest X-Ray image unclear about fracture"
    np.testing.assert_array_equal(prompt_to_labels("A chest X-Ray image with cardiomegaly, without edema"), parse_labels("Cardiomegaly=1, Edema=0"))


def test_parse_user_strings():
    expected = np.full(14, np.nan, dtype=np.float32)
    expected[[2, 10, 5]] = [1, -1, 0]
    np.testing.assert_array_equal(parse_labels("Cardiomegaly=1, Pleural Effusion=-1, Edema=0"), expected)
    np.testing.assert_array_equal(parse_labels("  cardiomegaly = 1 ;EFFUSION=-1.0\n edema:0 "), expected)
    np.testing.assert_array_equal(parse_labels("pleuraleffusion=-1, Cardiomegaly, edema=+0"), expected)
    np.testing.assert_array_equal(parse_labels({"Cardiomegaly": 1, "effusion": -1, "Edema": 0}), expected)
    assert positive_key(expected) == 1 << 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("Cardiomegaly=2", "bad value '2' for Cardiomegaly: use 1"),
        ("Edema=yes", "bad value 'yes' for Edema"),
        ("Edema=nan", "bad value 'nan' for Edema"),
        ("Heart Failure=1", "unknown label 'Heart Failure'; valid labels: No Finding, Enlarged Cardiomediastinum"),
    ],
)
def test_bad_user_strings(text, message):
    with pytest.raises(UserError, match=message):
        parse_labels(text)


def test_bad_prompts():
    with pytest.raises(UserError, match="not a CXR-IRGen prompt"):
        prompt_to_labels("An image with edema")
    with pytest.raises(UserError, match="unknown observation 'heart failure'"):
        prompt_to_labels("A chest X-Ray image with heart failure")


def test_labels_from_row():
    vector = labels_from_row({"Edema": 1.0, "Fracture": "", "Cardiomegaly": None, "Pneumonia": float("nan"), "No Finding": "0"})
    assert vector[5] == 1 and vector[0] == 0 and np.isnan(vector[[2, 7, 12]]).all()
