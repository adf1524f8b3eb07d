"""A generic CSV of images (path, view, labels, report text) as an index table.

The result has the :func:`~cxr_irgen.data.mimic.load_index` schema plus ``report_text``
(the ``text_column``, '' when absent), so selections, datasets and reference lookup work
on it unchanged. Labels come from ``label_columns`` (CSV column → CheXpert observation,
values 1/0/-1/blank) and/or from ``finding_column`` through ``finding_labels`` (a value of
that column → a label string such as ``"Pneumonia=1, Lung Opacity=1"``; unmapped values
leave the labels blank). Every mapping is validated: unknown columns, observation names
and values raise a one-line UserError.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, canonical_name, parse_labels
from cxr_irgen.data.mimic import INDEX_COLUMNS, read_label_columns
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)


def _ids(values: pd.Series) -> np.ndarray:
    """Integer ids: the values themselves when they are all integers, else 1-based codes in order of appearance."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        return numeric.astype("int64").to_numpy()
    return pd.factorize(values.astype(str))[0].astype("int64") + 1


def load_csv_table(
    csv: str | Path,
    image_root: str | Path | None = None,
    image_column: str = "filename",
    view_column: str | None = None,
    label_columns: Mapping[str, str] | None = None,
    text_column: str | None = None,
    *,
    finding_column: str | None = None,
    finding_labels: Mapping[str, str] | None = None,
    view_map: Mapping[str, str] | None = None,
    subject_column: str | None = None,
    study_column: str | None = None,
    split_column: str | None = None,
    split: str = "train",
) -> pd.DataFrame:
    """Read ``csv`` into an index table; relative image paths are resolved against ``image_root`` (default: the CSV's folder).

    Without ``study_column`` every row is its own study; without ``split_column`` every row
    gets ``split``. Views are upper-cased after ``view_map`` (e.g. ``{"AP Supine": "AP", "L": "LATERAL"}``).
    Rows naming an image already listed are dropped (first kept) and counted in the log.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise UserError(f"CSV not found: {csv}; set data.csv to your table of images")
    label_columns = {column: canonical_name(name) for column, name in (label_columns or {}).items()}
    finding_vectors = {value: parse_labels(text) for value, text in (finding_labels or {}).items()}
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as err:
        raise UserError(f"cannot read CSV {csv}: {' '.join(str(err).split())}") from None
    wanted = [image_column, view_column, text_column, finding_column, subject_column, study_column, split_column, *label_columns]
    missing = [c for c in wanted if c is not None and c not in table.columns]
    if missing:
        raise UserError(f"{csv} lacks column(s) {', '.join(missing)}; it has: {', '.join(table.columns)}")
    if not len(table):
        raise UserError(f"{csv} has no rows")

    root = Path(image_root) if image_root else csv.parent
    paths = table[image_column].map(lambda name: str((root / name).resolve()) if name else "")
    duplicated = paths.duplicated()
    if duplicated.any():
        log.warning("%s: %d row(s) repeat an image already listed; keeping the first", csv, int(duplicated.sum()))
    table, paths = table[~duplicated].reset_index(drop=True), paths[~duplicated].reset_index(drop=True)

    labels = read_label_columns(csv, table[list(label_columns)].rename(columns=label_columns).replace("", np.nan))
    labels = labels[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    if finding_column:
        for row, value in enumerate(table[finding_column]):
            vector = finding_vectors.get(value)
            if vector is not None:
                labels[row] = np.where(np.isnan(vector), labels[row], vector)
    views = table[view_column].map(lambda v: (view_map or {}).get(v, v)).str.strip().str.upper() if view_column else ""
    study_ids = _ids(table[study_column]) if study_column else np.arange(1, len(table) + 1, dtype=np.int64)
    out = pd.DataFrame(
        {
            "dicom_id": [Path(p).stem for p in paths],
            "subject_id": _ids(table[subject_column]) if subject_column else study_ids,
            "study_id": study_ids,
            "view": views,
            "split": table[split_column].str.strip().str.lower() if split_column else split,
            "image_path": paths,
            "report_path": "",
            **{name: labels[:, LABEL_INDEX[name]] for name in CHEXPERT_LABELS},
            "report_text": table[text_column].fillna("") if text_column else "",
        }
    )
    log.info("read %d images from %s (%d with labels, %d with text)", len(out), csv, int((~np.isnan(labels)).any(axis=1).sum()), int((out["report_text"] != "").sum()))
    return out[[*INDEX_COLUMNS, "report_text"]]
