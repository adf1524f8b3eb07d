"""MIMIC-CXR-JPG index: schema, paths, labels, parquet cache reuse and invalidation, bad CSVs."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_tree import write_tree

from cxr_irgen.data import mimic
from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.data.mimic import CHEXPERT_CSV, INDEX_COLUMNS, METADATA_CSV, SPLIT_CSV, load_index
from cxr_irgen.errors import UserError


@pytest.fixture()
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "mimic")


def test_index_schema_paths_and_labels(tree, tmp_path):
    index = load_index(tree, cache_dir=tmp_path / "cache")
    assert tuple(index.columns) == INDEX_COLUMNS and len(index) == 12
    row = index.set_index("dicom_id").loc["d01"]
    assert row["image_path"] == str(tree.resolve() / "files/p10/p10000001/s50000001/d01.jpg") and Path(row["image_path"]).is_file()
    assert row["report_path"] == str(tree.resolve() / "files/p10/p10000001/s50000001.txt")
    assert (row["subject_id"], row["study_id"], row["view"], row["split"]) == (10000001, 50000001, "PA", "train")
    assert row["Cardiomegaly"] == 1.0 and row["Edema"] == 0.0 and np.isnan(row["No Finding"])
    by_id = index.set_index("dicom_id")
    assert by_id.loc["d05", "Edema"] == -1.0
    assert by_id.loc["d07", "report_path"] == ""  # study without a report file
    assert by_id.loc["d12", "view"] == "" and by_id.loc["d12", CHEXPERT_LABELS].isna().all()  # no view, not in chexpert CSV
    assert by_id.loc["d10", "view"] == "LL"
    assert index[list(CHEXPERT_LABELS)].dtypes.eq(np.float32).all()
    assert set(index["split"]) == {"train", "validate", "test"}


def test_plain_csvs_read_like_gzipped(tmp_path):
    gz = load_index(write_tree(tmp_path / "gz"), cache_dir=tmp_path / "c1")
    plain = load_index(write_tree(tmp_path / "plain", gz=False), cache_dir=tmp_path / "c2")
    columns = [c for c in INDEX_COLUMNS if not c.endswith("_path")]
    pd.testing.assert_frame_equal(gz[columns], plain[columns])


def test_reports_root_elsewhere(tmp_path):
    images = write_tree(tmp_path / "jpg")
    reports = tmp_path / "reports"
    reports.mkdir()
    (images / "files").rename(reports / "files")  # reports (and here images too) live outside the CSV root
    index = load_index(images, reports_root=reports, cache_dir=tmp_path / "c")
    assert index.set_index("dicom_id").loc["d01", "report_path"] == str(reports.resolve() / "files/p10/p10000001/s50000001.txt")


def test_cache_is_reused_without_reading_csvs(tree, tmp_path, monkeypatch):
    first = load_index(tree, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("index-*.parquet"))) == 1

    def no_csv(*args, **kwargs):
        raise AssertionError("the cached load read a CSV")

    monkeypatch.setattr(mimic.pd, "read_csv", no_csv)
    pd.testing.assert_frame_equal(load_index(tree, cache_dir=tmp_path / "cache"), first)
    with pytest.raises(UserError, match="read a CSV"):
        load_index(tree, cache_dir=tmp_path / "cache", rebuild=True)


def test_cache_follows_changed_csvs(tree, tmp_path):
    load_index(tree, cache_dir=tmp_path / "cache")
    split = tree / f"{SPLIT_CSV}.gz"
    text = gzip.open(split, "rt").read().replace("d01,50000001,10000001,train", "d01,50000001,10000001,test")
    with gzip.open(split, "wt") as f:
        f.write(text)
    os.utime(split, ns=(split.stat().st_atime_ns, split.stat().st_mtime_ns + 10**9))
    index = load_index(tree, cache_dir=tmp_path / "cache")
    assert index.set_index("dicom_id").loc["d01", "split"] == "test"
    assert len(list((tmp_path / "cache").glob("index-*.parquet"))) == 2


def test_default_cache_next_to_data_and_unwritable_cache_warns(tree, tmp_path, caplog):
    load_index(tree)
    assert list((tree / ".cxr_irgen_cache").glob("index-*.parquet"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert len(load_index(tree, cache_dir=blocker / "cache")) == 12
    assert "data.cache_dir" in caplog.text


@pytest.mark.parametrize("name", [METADATA_CSV, CHEXPERT_CSV, SPLIT_CSV])
def test_missing_csv_says_what_to_place_where(tree, name):
    (tree / f"{name}.gz").unlink()
    with pytest.raises(UserError, match=f"missing {name}.gz in {tree.resolve()}: place"):
        load_index(tree)


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match="data root not found"):
        load_index(tmp_path / "absent")


def _rewrite(path: Path, edit) -> None:
    text = gzip.open(path, "rt").read()
    with gzip.open(path, "wt") as f:
        f.write(edit(text))


def test_missing_column_is_named(tree):
    _rewrite(tree / f"{METADATA_CSV}.gz", lambda t: t.replace("ViewPosition", "ViewPos", 1))
    with pytest.raises(UserError, match="lacks column\\(s\\) ViewPosition"):
        load_index(tree)


def test_bad_label_value_is_named(tree):
    _rewrite(tree / f"{CHEXPERT_CSV}.gz", lambda t: t.replace("\n10000001,50000001,", "\n10000001,50000001,maybe", 1))
    with pytest.raises(UserError, match="column 'Atelectasis' has value 'maybe'"):
        load_index(tree)
    _rewrite(tree / f"{CHEXPERT_CSV}.gz", lambda t: t.replace("maybe", "2.0"))
    with pytest.raises(UserError, match="value '2.0'.*use 1, 0, -1 or blank"):
        load_index(tree)


def test_garbage_csv_is_one_line_error(tree):
    (tree / f"{SPLIT_CSV}.gz").write_bytes(b"\x1f\x8b garbage that is not gzip")
    with pytest.raises(UserError, match=f"{SPLIT_CSV}.gz") as err:
        load_index(tree)
    assert "\n" not in str(err.value)


def test_non_integer_ids_are_a_user_error(tree):
    _rewrite(tree / f"{METADATA_CSV}.gz", lambda t: t.replace(",10000001,50000001,", ",abc,50000001,", 1))
    with pytest.raises(UserError, match=f"malformed CSV .*{METADATA_CSV}"):
        load_index(tree)
