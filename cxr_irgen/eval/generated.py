"""Read what a generator wrote into one table: image path, conditioning labels, report, reference.

Sources, any combination:

- ``DIR/pairs.jsonl`` (``cxr-irgen generate``): one JSON object per line with ``image``
  (relative to DIR, or absolute), ``labels`` (a :func:`~cxr_irgen.data.labels.format_labels`
  string or null), optional ``prompt``, ``report``, ``reference``.
- otherwise images in DIR (recursively) with a JSON sidecar of the same stem (keys
  ``labels`` and/or ``prompt``, ``seed``, ...; ``image`` may name the file).
- a reports CSV: a generated-report column plus a reference-text column or a ``study_id``
  column (the reference is then looked up in the real data's report sections).

Columns of the result: ``image`` (absolute path or ''), ``labels`` ((14,) float32 or
None), ``report`` (str or None), ``reference`` (str or None), ``study_id`` (or None).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_irgen.data.imageio import IMAGE_SUFFIXES
from cxr_irgen.data.labels import parse_labels, prompt_to_labels
from cxr_irgen.errors import UserError

COLUMNS = ("image", "labels", "report", "reference", "study_id")


def _labels_of(record: dict, where: str) -> np.ndarray | None:
    if record.get("labels") is not None:
        return parse_labels(str(record["labels"]))
    if record.get("prompt"):
        return prompt_to_labels(str(record["prompt"]))
    return None


def _row(record: dict, image: Path | None, where: str) -> dict:
    if image is not None and not image.is_file():
        raise UserError(f"{where}: image {image} does not exist")
    return {
        "image": str(image.resolve()) if image is not None else "",
        "labels": _labels_of(record, where),
        "report": record.get("report"),
        "reference": record.get("reference"),
        "study_id": record.get("study_id"),
    }


def _from_pairs_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number} is not JSON: {err.msg}") from None
        image = Path(record["image"]) if record.get("image") else None
        if image is not None and not image.is_absolute():
            image = path.parent / image
        rows.append(_row(record, image, f"{path}:{number}"))
    return rows


def _from_sidecars(folder: Path) -> list[dict]:
    rows = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        sidecar = image.with_suffix(".json")
        record = {}
        if sidecar.is_file():
            try:
                record = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise UserError(f"sidecar {sidecar} is not JSON: {err.msg}") from None
        rows.append(_row(record, image, str(sidecar)))
    return rows


def _from_reports_csv(path: Path, report_column: str, reference_column: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"generated_reports={path}: no such file")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    has_reference = reference_column in table.columns
    if report_column not in table.columns or not (has_reference or "study_id" in table.columns):
        raise UserError(
            f"generated_reports={path} needs a {report_column!r} column and a {reference_column!r} or 'study_id' column; "
            f"available columns: {', '.join(table.columns)}"
        )
    return [
        {"image": "", "labels": None, "report": r[report_column], "reference": r[reference_column] if has_reference else None,
         "study_id": None if has_reference else int(r["study_id"])}
        for r in table.to_dict("records")
    ]


def load_generated(generated: str | None, reports_csv: str | None = None, report_column: str = "report", reference_column: str = "reference") -> pd.DataFrame:
    """The generated items of a folder and/or a reports CSV as one table (see module docstring)."""
    rows: list[dict] = []
    if generated:
        folder = Path(str(generated))
        if not folder.is_dir():
            raise UserError(f"generated={folder}: no such folder (a generate run dir, or images with JSON sidecars)")
        pairs = folder / "pairs.jsonl"
        rows += _from_pairs_jsonl(pairs) if pairs.is_file() else _from_sidecars(folder)
    if reports_csv:
        rows += _from_reports_csv(Path(str(reports_csv)), report_column, reference_column)
    if not rows:
        raise UserError("nothing to evaluate: give generated=DIR (pairs.jsonl or images with JSON sidecars) and/or generated_reports=FILE.csv")
    return pd.DataFrame(rows, columns=list(COLUMNS))
