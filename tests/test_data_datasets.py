"""Datasets: item contents, (seed, epoch, index)-determinism of the reference choice, skip_bad, collate."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_tree import write_tree
from torch.utils.data import DataLoader

from cxr_irgen.data.datasets import ImageReportDataset, ReportTextDataset, VisionDataset, collate
from cxr_irgen.data.imageio import BadImageError
from cxr_irgen.data.labels import prompt_to_labels
from cxr_irgen.data.mimic import load_index
from cxr_irgen.data.reference import ReferenceIndex
from cxr_irgen.data.sections import load_report_sections
from cxr_irgen.data.selections import language_stage2, vision_train
from cxr_irgen.errors import UserError


@pytest.fixture()
def index(tmp_path):
    return load_index(write_tree(tmp_path / "m"))


def test_vision_items(index):
    train = index[index["split"] == "train"]
    dataset = VisionDataset(train, 16, ReferenceIndex.from_index(index), seed=3)
    item = dataset[0]
    assert item["pixel_values"].shape == item["reference_pixels"].shape == (1, 16, 16)
    assert 0 <= float(item["pixel_values"].min()) and float(item["reference_pixels"].max()) <= 1
    assert item["dicom_id"] == "d01" and item["reference_id"] in {"d02", "d03"}  # same label key, never itself
    assert item["prompt"] == "A chest X-Ray image with cardiomegaly, without edema"
    np.testing.assert_array_equal(prompt_to_labels(item["prompt"]), item["labels"].numpy())
    assert item["labels"].dtype == torch.float32 and item["labels"].shape == (14,) and torch.isnan(item["labels"]).sum() == 12
    for i in range(len(dataset)):
        assert dataset[i]["reference_id"] != dataset[i]["dicom_id"]


def test_reference_depends_on_seed_epoch_and_index_only(index):
    train = index[index["split"] == "train"]
    reference = ReferenceIndex.from_index(index, exclude_rule="image")  # d02 (same study as d01) stays a candidate
    epoch = {"now": 0}

    def refs(seed):
        dataset = VisionDataset(train, 8, reference, seed=seed, epoch_fn=lambda: epoch["now"])
        return [dataset[0]["reference_id"] for _ in range(3)]

    by_epoch = {}
    for epoch["now"] in range(12):
        first = refs(0)
        assert len(set(first)) == 1 and first == refs(0)  # the same item of the same epoch: same reference
        by_epoch[epoch["now"]] = first[0]
    assert set(by_epoch.values()) == {"d02", "d03"}  # epochs vary the choice


def test_without_reference(index):
    item = VisionDataset(vision_train(index), 8, None)[0]
    assert item["reference_id"] == "" and float(item["reference_pixels"].abs().sum()) == 0


def test_skip_bad_replaces_with_next_item_and_counts(index, caplog):
    train = vision_train(index)
    bad_path = train["image_path"].iloc[1]
    open(bad_path, "wb").write(b"not an image")
    strict = VisionDataset(train, 8, None)
    with pytest.raises(BadImageError, match=bad_path):
        strict[1]
    lenient = VisionDataset(train, 8, None, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        items = [lenient[i]["dicom_id"] for i in range(len(lenient))]
        lenient.log_bad_files()
    assert items == ["d01", "d06", "d06", "d07"] and lenient.bad_count == 1
    assert "skipped 1 unreadable image file(s)" in caplog.text


def test_skip_bad_with_nothing_readable_is_a_user_error(index):
    train = vision_train(index)
    for path in train["image_path"]:
        open(path, "wb").write(b"")
    with pytest.raises(UserError, match="every one of the 4 images is unreadable"):
        VisionDataset(train, 8, None, skip_bad=True)[0]


def test_image_report_dataset_and_loader(index):
    sections = load_report_sections(index)
    dataset = ImageReportDataset(language_stage2(index), sections, 16, "findings")
    assert [dataset[i]["dicom_id"] for i in range(len(dataset))] == ["d01", "d03", "d06"]  # d04's study has no findings
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate)))
    assert batch["pixel_values"].shape == (3, 1, 16, 16) and batch["text"][1] == "Enlarged heart, no edema."
    with pytest.raises(UserError, match="no image/report pairs with a impression text"):
        ImageReportDataset(language_stage2(index).iloc[1:2], sections, 16, "impression")


def test_report_text_dataset_and_collate_of_strings():
    dataset = ReportTextDataset(["a", "b"])
    assert len(dataset) == 2 and dataset[1] == "b"
    assert collate([dataset[0], dataset[1]]) == ["a", "b"]


def test_vision_batches_collate(index):
    dataset = VisionDataset(vision_train(index), 8, ReferenceIndex.from_index(index))
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    assert batch["pixel_values"].shape == batch["reference_pixels"].shape == (4, 1, 8, 8)
    assert batch["labels"].shape == (4, 14) and len(batch["prompt"]) == 4 and isinstance(batch["dicom_id"], list)


def test_datasets_pickle_for_spawned_workers(index):
    import pickle

    dataset = VisionDataset(vision_train(index), 8, ReferenceIndex.from_index(index), seed=5)
    copy = pickle.loads(pickle.dumps(dataset))
    assert [copy[i]["reference_id"] for i in range(len(copy))] == [dataset[i]["reference_id"] for i in range(len(dataset))]
