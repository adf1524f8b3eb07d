"""The DESIGN 1.1 selections on the hand-written MIMIC tree: which images/studies each one keeps, and logged counts."""

from __future__ import annotations

import logging

import pytest
from data_tree import write_tree

from cxr_irgen.data import selections
from cxr_irgen.data.mimic import load_index
from cxr_irgen.data.sections import load_report_sections
from cxr_irgen.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_tree(tmp_path_factory.mktemp("sel") / "m")
    index = load_index(root)
    return index, load_report_sections(index)


def test_vision_train_is_train_pa(data, caplog):
    with caplog.at_level(logging.INFO):
        selected = selections.vision_train(data[0])
    assert sorted(selected["dicom_id"]) == ["d01", "d04", "d06", "d07"]
    assert "vision_train: 4 PA train images" in caplog.text


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("findings", {50000001: "Enlarged heart.", 50000002: "Enlarged heart, no edema.", 50000004: "Normal chest."}),
        ("impression", {50000001: "Cardiomegaly.", 50000003: "Cardiomegaly, possible edema.", 50000004: "Normal chest."}),
        ("findings_impression_concat", {50000001: "Enlarged heart. Cardiomegaly.", 50000002: "Enlarged heart, no edema.", 50000003: "Cardiomegaly, possible edema.", 50000004: "Normal chest."}),
    ],
)
def test_language_stage1_texts_of_train_studies(data, variant, expected):
    selected = selections.language_stage1(*data, variant=variant)
    assert dict(zip(selected["study_id"], selected["text"])) == expected  # validate/test studies (50000006+) excluded


def test_findings_plus_impression_is_each_section_its_own_sample_as_in_the_paper(data):
    selected = selections.language_stage1(*data, variant="findings+impression")
    assert sorted(zip(selected["study_id"], selected["text"])) == [
        (50000001, "Cardiomegaly."), (50000001, "Enlarged heart."), (50000002, "Enlarged heart, no edema."),
        (50000003, "Cardiomegaly, possible edema."), (50000004, "Normal chest."),  # a combined FINDINGS AND IMPRESSION section once
    ]


def test_language_stage2_one_frontal_image_per_study_pa_preferred(data):
    selected = selections.language_stage2(data[0])
    assert dict(zip(selected["study_id"], selected["dicom_id"])) == {50000001: "d01", 50000002: "d03", 50000003: "d04", 50000004: "d06"}
    # 50000003 has PA d04 and AP d05: PA wins; 50000002 has only AP; 50000005 has no report
    assert sorted(selections.language_stage2(data[0], "test")["dicom_id"]) == ["d09", "d11"]


def test_vision_test_is_seeded_random_pa(data):
    index = data[0]
    many = index.assign(split="test", view="PA")
    first, again, other = (selections.vision_test(many, n=5, seed=s)["dicom_id"].tolist() for s in (1, 1, 2))
    assert first == again and first != other and len(set(first)) == 5
    assert selections.vision_test(index, n=1000)["dicom_id"].tolist() == ["d09"]  # fewer than n: all of them


def test_language_test_pairs(data):
    with_findings = selections.language_test(*data, require="findings")
    either = selections.language_test(*data, require="findings_or_impression")
    assert with_findings["dicom_id"].tolist() == ["d09"]  # d12 has findings but no frontal view
    assert sorted(either["dicom_id"]) == ["d09", "d11"] and {"findings", "impression"} <= set(either.columns)


def test_bad_variant_names_the_choices(data):
    with pytest.raises(UserError, match="use one of findings, impression, findings\\+impression"):
        selections.language_stage1(*data, variant="report")
    with pytest.raises(UserError, match="require='all'"):
        selections.language_test(*data, require="all")
