"""The MIMIC-CXR-JPG 2.0.0 index: one row per image, cached on disk as parquet.

Reads the three official CSVs (gzipped or not) under ``root``::

    mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, the 14 CheXpert columns
    mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split

and the tree ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (images) and
``files/p10/p10000032/s50414267.txt`` (reports, from mimic-cxr-reports; under
``reports_root`` when they live elsewhere). The table (:data:`INDEX_COLUMNS`):

    dicom_id str, subject_id int64, study_id int64, view str (ViewPosition upper-cased, '' if missing),
    split str (train/validate/test), image_path str (absolute), report_path str (absolute, '' if absent),
    the 14 CheXpert columns float32 (1/0/-1, NaN = blank; studies absent from the chexpert CSV are all NaN)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_irgen.data.cache import write_cache
from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
SPLITS = ("train", "validate", "test")
INDEX_COLUMNS = ("dicom_id", "subject_id", "study_id", "view", "split", "image_path", "report_path", *CHEXPERT_LABELS)
CACHE_VERSION = 1
LABEL_VALUES = (1.0, 0.0, -1.0)


def find_csv(root: Path, name: str) -> Path:
    """``root/name.gz`` or ``root/name``; a one-line UserError saying what to place where when neither exists."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"missing {name}.gz in {root}: place the MIMIC-CXR-JPG 2.0.0 file {name}.gz (or unzipped {name}) there")


def study_dir(subject_id: int, study_id: int) -> str:
    """Relative folder of a study: ``files/p10/p10000032/s50414267``."""
    subject = str(subject_id)
    return f"files/p{subject[:2]}/p{subject}/s{study_id}"


def read_csv_columns(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read ``columns`` ({name: dtype}) from a CSV; a missing column or unparsable value is a one-line UserError."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception as err:
        raise UserError(f"cannot read CSV {path}: {' '.join(str(err).split())}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}; it has: {', '.join(map(str, header))}")
    try:
        return pd.read_csv(path, usecols=list(columns), dtype=columns, engine="pyarrow")
    except Exception as err:  # pyarrow's ArrowInvalid and friends
        raise UserError(f"malformed CSV {path}: {' '.join(str(err).split())}") from None


def read_label_columns(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Convert the CheXpert columns of ``frame`` to float32 (missing ones: all NaN), rejecting values other than 1/0/-1/blank."""
    for name in CHEXPERT_LABELS:
        if name not in frame.columns:
            frame[name] = np.float32(np.nan)
            continue
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column)
        values = column if numeric else pd.to_numeric(column, errors="coerce")
        bad = values.notna() & ~values.isin(LABEL_VALUES)
        if not numeric:
            bad |= values.isna() & column.notna() & (column.astype(str).str.strip() != "")
        if bad.any():
            example = column[bad].iloc[0]
            raise UserError(f"{path}: column {name!r} has value {str(example)!r} (row {int(np.flatnonzero(bad.to_numpy())[0]) + 2}); use 1, 0, -1 or blank")
        frame[name] = values.astype(np.float32)
    return frame


def read_chexpert(path: Path) -> pd.DataFrame:
    """study_id and the 14 labels as float32; parsed as numbers directly, as text only to explain a bad value."""
    try:
        frame = read_csv_columns(path, {"study_id": "int64", **{name: "float32" for name in CHEXPERT_LABELS}})
    except UserError:
        frame = read_csv_columns(path, {"study_id": "int64", **{name: "str" for name in CHEXPERT_LABELS}})
    return read_label_columns(path, frame).drop_duplicates("study_id")


def build_index(root: Path, reports_root: Path | None = None) -> pd.DataFrame:
    """Read the three CSVs under ``root`` into the index table (no cache)."""
    root = Path(root).resolve()
    reports_root = Path(reports_root).resolve() if reports_root else root
    meta = read_csv_columns(find_csv(root, METADATA_CSV), {"dicom_id": "str", "subject_id": "int64", "study_id": "int64", "ViewPosition": "str"})
    split = read_csv_columns(find_csv(root, SPLIT_CSV), {"dicom_id": "str", "split": "str"})
    chexpert = read_chexpert(find_csv(root, CHEXPERT_CSV))

    index = meta.rename(columns={"ViewPosition": "view"})
    index["view"] = index["view"].fillna("").str.strip().str.upper()
    index = index.merge(split.drop_duplicates("dicom_id"), on="dicom_id", how="left")
    unsplit = int(index["split"].isna().sum())
    if unsplit:
        log.warning("%d images of %s are not in %s; their split is ''", unsplit, METADATA_CSV, SPLIT_CSV)
    index["split"] = index["split"].fillna("").str.strip().str.lower()
    index = index.merge(chexpert, on="study_id", how="left")

    subjects = index["subject_id"].astype(str)
    folders = "/files/p" + subjects.str[:2] + "/p" + subjects + "/s" + index["study_id"].astype(str)
    index["image_path"] = str(root) + folders + "/" + index["dicom_id"] + ".jpg"
    has_report = index["study_id"].isin(_studies_with_report(str(reports_root), index["subject_id"].unique()))
    index["report_path"] = (str(reports_root) + folders + ".txt").where(has_report, "")
    return index[list(INDEX_COLUMNS)].reset_index(drop=True)


def _studies_with_report(reports_root: str, subject_ids: np.ndarray) -> set[int]:
    """Study ids with a ``files/pXX/pSUBJECT/sSTUDY.txt`` report under ``reports_root``.

    Lists each subject folder once (65k ``scandir`` calls on full MIMIC) instead of one
    ``stat`` per study.
    """
    found: set[int] = set()
    for subject in map(str, subject_ids):
        try:
            with os.scandir(f"{reports_root}/files/p{subject[:2]}/p{subject}") as entries:
                found.update(int(e.name[1:-4]) for e in entries if e.name[0] == "s" and e.name.endswith(".txt") and e.name[1:-4].isdigit())
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def _cache_key(root: Path, reports_root: Path | None) -> str:
    parts = {"version": CACHE_VERSION, "root": str(root), "reports_root": str(reports_root or root)}
    for name in (METADATA_CSV, CHEXPERT_CSV, SPLIT_CSV):
        path = find_csv(root, name)
        stat = path.stat()
        parts[name] = [str(path), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir(root: str | Path) -> Path:
    """Where caches go when ``cache_dir`` is not set: ``<root>/.cxr_irgen_cache``."""
    return Path(root).resolve() / ".cxr_irgen_cache"


def load_index(root: str | Path, cache_dir: str | Path | None = None, rebuild: bool = False, reports_root: str | Path | None = None) -> pd.DataFrame:
    """The index table of a MIMIC-CXR-JPG tree, from the parquet cache when the CSVs are unchanged.

    The cache file is keyed by the CSVs' paths, sizes and modification times (and the
    report root); ``rebuild=True`` ignores it. An unwritable cache folder only logs a warning.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"data root not found: {root}; set data.root to your MIMIC-CXR-JPG folder (or run `cxr-irgen make-phantoms out={root}`)")
    reports_root = Path(reports_root).resolve() if reports_root else None
    cache = Path(cache_dir) if cache_dir else default_cache_dir(root)
    cache_file = cache / f"index-{_cache_key(root, reports_root)}.parquet"
    if cache_file.is_file() and not rebuild:
        index = pd.read_parquet(cache_file)
        log.info("loaded index of %d images from cache %s", len(index), cache_file)
        return index
    index = build_index(root, reports_root)
    log.info("indexed %d images, %d studies, %d subjects under %s", len(index), index["study_id"].nunique(), index["subject_id"].nunique(), root)
    write_cache(index, cache_file)
    return index
