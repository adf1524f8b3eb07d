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
        return pd.read_csv(path, usecols=list(columns), dtype=columns, engine="c", low_memory=False)
    except (ValueError, TypeError) as err:
        raise UserError(f"malformed CSV {path}: {' '.join(str(err).split())}") from None


def read_label_columns(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Convert the CheXpert columns of ``frame`` to float32 (missing ones: all NaN), rejecting values other than 1/0/-1/blank."""
    for name in CHEXPERT_LABELS:
        if name not in frame.columns:
            frame[name] = np.float32(np.nan)
            continue
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna() & (frame[name].astype(str).str.strip() != "")
        bad |= values.notna() & ~values.isin(LABEL_VALUES)
        if bad.any():
            example = frame.loc[bad, name].iloc[0]
            raise UserError(f"{path}: column {name!r} has value {example!r} (row {int(np.flatnonzero(bad.to_numpy())[0]) + 2}); use 1, 0, -1 or blank")
        frame[name] = values.astype(np.float32)
    return frame


def build_index(root: Path, reports_root: Path | None = None) -> pd.DataFrame:
    """Read the three CSVs under ``root`` into the index table (no cache)."""
    root = Path(root).resolve()
    reports_root = Path(reports_root).resolve() if reports_root else root
    meta = read_csv_columns(find_csv(root, METADATA_CSV), {"dicom_id": "str", "subject_id": "int64", "study_id": "int64", "ViewPosition": "str"})
    split = read_csv_columns(find_csv(root, SPLIT_CSV), {"dicom_id": "str", "split": "str"})
    chexpert_path = find_csv(root, CHEXPERT_CSV)
    chexpert = read_csv_columns(chexpert_path, {"study_id": "int64", **{name: "str" for name in CHEXPERT_LABELS}})
    chexpert = read_label_columns(chexpert_path, chexpert).drop_duplicates("study_id")

    index = meta.rename(columns={"ViewPosition": "view"})
    index["view"] = index["view"].fillna("").str.strip().str.upper()
    index = index.merge(split.drop_duplicates("dicom_id"), on="dicom_id", how="left")
    unsplit = int(index["split"].isna().sum())
    if unsplit:
        log.warning("%d images of %s are not in %s; their split is ''", unsplit, METADATA_CSV, SPLIT_CSV)
    index["split"] = index["split"].fillna("").str.strip().str.lower()
    index = index.merge(chexpert, on="study_id", how="left")

    studies = index["study_id"].astype(str)
    subjects = index["subject_id"].astype(str)
    folders = "files/p" + subjects.str[:2] + "/p" + subjects + "/s" + studies
    index["image_path"] = str(root) + "/" + folders + "/" + index["dicom_id"] + ".jpg"
    index["report_path"] = _report_paths(reports_root, folders)
    return index[list(INDEX_COLUMNS)].reset_index(drop=True)


def _report_paths(reports_root: Path, folders: pd.Series) -> pd.Series:
    """Absolute ``<study>.txt`` paths of the studies whose report file exists, '' elsewhere.

    Lists each subject folder once (65k ``scandir`` calls on full MIMIC) instead of one
    ``stat`` per study.
    """
    subject_dirs = folders.str.rsplit("/", n=1).str[0]
    present: set[str] = set()
    for subject_dir in subject_dirs.unique():
        try:
            with os.scandir(reports_root / subject_dir) as entries:
                present.update(f"{subject_dir}/{e.name[:-4]}" for e in entries if e.name.endswith(".txt"))
        except (FileNotFoundError, NotADirectoryError):
            continue
    has_report = folders.isin(present)
    return pd.Series(np.where(has_report, str(reports_root) + "/" + folders + ".txt", ""), index=folders.index, dtype="str")


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
