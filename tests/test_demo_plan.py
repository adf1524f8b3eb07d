"""The demo's showcase plan and its repeated-sentence count, without training anything."""

from __future__ import annotations

import numpy as np

from cxr_irgen.data.labels import CHEXPERT_LABELS, label_key
from cxr_irgen.demo import in_group, repeats_a_sentence, shared_means, showcase_plan

GROUPS = ["No Finding", "Cardiomegaly", "Pleural Effusion"]


def test_plan_gives_every_group_its_images_with_a_real_phantom_of_the_same_labels(phantom_root):
    from cxr_irgen.data.mimic import load_index

    index = load_index(phantom_root)
    pa = index[index["view"] == "PA"]
    plan = showcase_plan(index, GROUPS, per_group=8, n=4)
    vectors = plan[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    keys = [label_key(v) for v in vectors]
    assert len(set(keys)) == len(keys)  # one card per label vector
    for group in GROUPS:
        available = {label_key(v) for v in pa[list(CHEXPERT_LABELS)].to_numpy(np.float32) if in_group(v, group)}
        assert 4 * sum(in_group(v, group) for v in vectors) >= min(8, 4 * len(available)), group
    for row, key in zip(plan.to_dict("records"), keys):
        real = pa[pa["image_path"] == row["image_path"]]
        assert len(real) == 1 and label_key(real[list(CHEXPERT_LABELS)].to_numpy(np.float32)[0]) == key and real["split"].item() == row["split"]
        assert all(g in row["groups"].split(", ") for g in GROUPS if in_group(np.array([row[c] for c in CHEXPERT_LABELS], np.float32), g))
    first = [row["split"] for row in plan.to_dict("records") if row["groups"].split(", ")[0] == GROUPS[0]]
    assert first == sorted(first, key=["test", "validate", "train"].index)  # held-out phantoms first


def test_no_finding_group_excludes_vectors_with_a_finding():
    vec = np.full(len(CHEXPERT_LABELS), np.nan, dtype=np.float32)
    vec[CHEXPERT_LABELS.index("No Finding")] = 1.0
    assert in_group(vec, "No Finding")
    vec[CHEXPERT_LABELS.index("Cardiomegaly")] = 1.0
    assert not in_group(vec, "No Finding") and in_group(vec, "Cardiomegaly")


def test_repeated_sentence():
    assert repeats_a_sentence("No pneumothorax is seen. No pneumothorax is seen. No pneumothorax.")
    assert repeats_a_sentence("The lungs are clear.  the lungs are clear")
    assert not repeats_a_sentence("No pneumothorax is seen. No effusion is seen. No pneumothorax.")
    assert not repeats_a_sentence("")


def test_the_classifier_gap_compares_means_over_the_same_pathologies():
    """A pathology without positives on one side (no AUROC) leaves both means: 0.9 vs 0.95, not 0.9 vs (0.95 + 0.70)/2."""
    per = {"Cardiomegaly": {"generated": {"auroc": 0.9}, "real": {"auroc": 0.95}},
           "Atelectasis": {"generated": {"auroc": None}, "real": {"auroc": 0.70}},
           "Effusion": {"generated": {"auroc": 0.8}, "real": None}}
    assert shared_means(per) == (0.9, 0.95, ["Cardiomegaly"])
    assert shared_means({"Effusion": per["Effusion"]}) == (None, None, [])
