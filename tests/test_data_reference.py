"""Reference lookup (DESIGN 1.1): exact key, same positive set, closest set; never self; seeded variety; determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_irgen.data.labels import CHEXPERT_LABELS, parse_labels
from cxr_irgen.data.reference import ReferenceIndex, canonical_labels
from cxr_irgen.errors import UserError

ROWS = {
    "exact_a": "Cardiomegaly=1, Edema=0",
    "exact_b": "Cardiomegaly=1, Edema=0",
    "exact_c": "Cardiomegaly=1, Edema=0",
    "same_pos": "Cardiomegaly=1, Edema=-1",
    "effusion": "Pleural Effusion=1",
    "eff_atel": "Pleural Effusion=1, Atelectasis=1",
    "three": "Pleural Effusion=1, Atelectasis=1, Pneumothorax=1, Fracture=0",
    "normal": "No Finding=1",
    "valset": "No Finding=1",
}


@pytest.fixture()
def reference() -> ReferenceIndex:
    labels = np.stack([parse_labels(text) for text in ROWS.values()])
    table = pd.DataFrame(labels, columns=list(CHEXPERT_LABELS))
    table.insert(0, "dicom_id", list(ROWS))
    table["split"] = ["validate" if d == "valset" else "train" for d in ROWS]
    table["image_path"] = [f"/img/{d}.jpg" for d in ROWS]
    table["study_id"] = list(ROWS)  # one image per study
    return ReferenceIndex.from_index(table)


def _choices(reference, labels, exclude=None, seeds=range(200)) -> set[str]:
    return {reference.lookup(labels, exclude=exclude, seed=s) for s in seeds}


def test_only_train_split_is_indexed(reference):
    assert len(reference) == 8 and reference.image_path("exact_a") == "/img/exact_a.jpg"
    with pytest.raises(UserError, match="valset"):
        reference.image_path("valset")


def test_exact_label_key_first_with_seeded_variety(reference):
    labels = parse_labels("Cardiomegaly=1, Edema=0")
    assert _choices(reference, labels) == {"exact_a", "exact_b", "exact_c"}  # never the same-positive-set image
    assert _choices(reference, labels, exclude="exact_b") == {"exact_a", "exact_c"}


def test_deterministic_per_seed(reference):
    labels = parse_labels("Cardiomegaly=1, Edema=0")
    first = [reference.lookup(labels, seed=s) for s in range(50)]
    assert first == [reference.lookup(labels, seed=s) for s in range(50)]
    assert len(set(first)) == 3


def test_same_positive_set_when_no_exact_match(reference):
    assert _choices(reference, parse_labels("Cardiomegaly=1")) == {"exact_a", "exact_b", "exact_c", "same_pos"}
    # the only exact match is the target itself: fall back to its positive set, never itself
    assert _choices(reference, parse_labels("Cardiomegaly=1, Edema=-1"), exclude="same_pos") == {"exact_a", "exact_b", "exact_c"}


def test_closest_positive_set_when_no_same_set(reference):
    # {Effusion, Pneumothorax}: distance 1 to {Effusion} and to {Effusion, Atelectasis, Pneumothorax}; 2 to others
    assert _choices(reference, parse_labels("Pleural Effusion=1, Pneumothorax=1")) == {"effusion", "three"}
    # the target is the only image of its positive set: the closest other set, not itself
    assert _choices(reference, parse_labels("No Finding=1"), exclude="normal") <= {"exact_a", "exact_b", "exact_c", "same_pos", "effusion"}
    assert "normal" not in _choices(reference, parse_labels("No Finding=1"), exclude="normal")


def test_no_positives_and_all_blank(reference):
    assert _choices(reference, np.full(14, np.nan, dtype=np.float32)) == {"normal", "effusion", "exact_a", "exact_b", "exact_c", "same_pos"}


def test_nan_and_negative_zero_bit_patterns_still_hit_the_exact_key(reference):
    labels = parse_labels("Cardiomegaly=1, Edema=0")
    odd = labels.copy()
    odd[np.isnan(odd)] = -np.float32(np.nan)
    odd[5] = -0.0
    assert odd.tobytes() != canonical_labels(labels).tobytes()
    assert _choices(reference, odd) == {"exact_a", "exact_b", "exact_c"}


def test_a_single_image_cannot_reference_itself():
    table = pd.DataFrame([parse_labels("Edema=1")], columns=list(CHEXPERT_LABELS)).assign(dicom_id="only", study_id="s", split="train", image_path="/x.jpg")
    reference = ReferenceIndex.from_index(table)
    assert reference.lookup(parse_labels("Edema=1")) == "only"
    with pytest.raises(UserError, match="no reference image other than 'only' and its study"):
        reference.lookup(parse_labels("Edema=1"), exclude="only")


def test_empty_train_split_is_a_user_error():
    table = pd.DataFrame([parse_labels("Edema=1")], columns=list(CHEXPERT_LABELS)).assign(dicom_id="v", split="test", image_path="/x.jpg")
    with pytest.raises(UserError, match="train split .* is empty"):
        ReferenceIndex.from_index(table)


def test_closest_set_search_is_memoised(reference, monkeypatch):
    from cxr_irgen.data import reference as reference_module

    labels = parse_labels("Pleural Effusion=1, Pneumothorax=1")
    calls = []
    monkeypatch.setattr(reference_module, "positive_masks", lambda x: calls.append(1) or np.sum((x == 1) * (1 << np.arange(14))))
    choices = [reference.lookup(labels, seed=seed) for seed in range(100)]
    assert len(calls) == 1 and len(reference._closest_memo) == 1 and set(choices) == {"effusion", "three"}


def test_pickles_for_dataloader_workers(reference):
    import pickle

    labels = parse_labels("Pleural Effusion=1, Pneumothorax=1")
    before = [reference.lookup(labels, seed=s) for s in range(20)]
    copy = pickle.loads(pickle.dumps(reference))
    assert [copy.lookup(labels, seed=s) for s in range(20)] == before


def _study_table(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(dicom_id, study_id, subject_id, labels) rows → an index table of the train split."""
    labels = np.stack([parse_labels(text) for *_, text in rows])
    table = pd.DataFrame(labels, columns=list(CHEXPERT_LABELS))
    table.insert(0, "dicom_id", [r[0] for r in rows])
    return table.assign(study_id=[r[1] for r in rows], subject_id=[r[2] for r in rows], split="train", image_path=[f"/img/{r[0]}.jpg" for r in rows])


TWO_IMAGES_PER_STUDY = [
    ("pa1", "s1", "p1", "Edema=1"), ("lat1", "s1", "p1", "Edema=1"),  # two views of one study
    ("pa2", "s2", "p1", "Edema=1"),                                     # another study of the same patient
    ("pa3", "s3", "p2", "Edema=1"), ("other", "s4", "p3", "Edema=1, Cardiomegaly=1"),
]


@pytest.mark.parametrize("rule, allowed", [("study", {"pa2", "pa3"}), ("patient", {"pa3"}), ("image", {"lat1", "pa2", "pa3"}), ("none", {"pa1", "lat1", "pa2", "pa3"})])
def test_exclusion_rules_keep_the_targets_study_or_patient_out(rule, allowed):
    reference = ReferenceIndex.from_index(_study_table(TWO_IMAGES_PER_STUDY), exclude_rule=rule)
    assert _choices(reference, parse_labels("Edema=1"), exclude="pa1", seeds=range(400)) == allowed


def test_study_exclusion_is_the_default_and_rule_counts_say_which_rule_fired():
    table = _study_table(TWO_IMAGES_PER_STUDY[:2] + [("card", "s5", "p4", "Edema=0, Cardiomegaly=1")])
    reference = ReferenceIndex.from_index(table)
    assert reference.exclude_rule == "study"
    assert _choices(reference, parse_labels("Edema=1"), exclude="pa1") == {"card"}  # the other view of s1 is never the reference
    labels = table[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    assert reference.rule_counts(labels, table["dicom_id"].tolist()) == {"exact": 0, "same_positives": 0, "closest": 3}
    assert ReferenceIndex.from_index(table, exclude_rule="image").rule_counts(labels, table["dicom_id"].tolist()) == {"exact": 2, "same_positives": 0, "closest": 1}
    with pytest.raises(UserError, match="reference.exclude='session'"):
        ReferenceIndex.from_index(table, exclude_rule="session")


def test_pick_after_an_exclusion_is_unbiased():
    rows = [(f"d{i}", f"s{i}", f"p{i}", "Edema=1") for i in range(4)]
    reference = ReferenceIndex.from_index(_study_table(rows))
    draws = [reference.lookup(parse_labels("Edema=1"), exclude="d1", seed=s) for s in range(3000)]
    shares = {d: draws.count(d) / len(draws) for d in ("d0", "d2", "d3")}
    assert "d1" not in draws and all(abs(share - 1 / 3) < 0.04 for share in shares.values()), shares  # main gave d2 one half
