"""Read what a generator wrote into one table: image path, conditioning labels, report, reference.

Sources, any combination:

- ``DIR/pairs.jsonl`` (``cxr-irgen generate``): one JSON object per line with ``image``
  (relative to DIR, or absolute), ``labels`` (a :func:`~cxr_irgen.data.labels.format_labels`
  string or null), optional ``prompt``, ``report``, ``reference``.
- a prompts table beside the images (``eval.inputs.table``, CSV or JSONL, one row per image):
  an image column (CheXGenBench's ``prompt_INFO.csv`` has ``img_savename``) or none, the
  images then being named by row index (RoentGen-v2 style: ``0.png``, ``00017.jpg``); a
  labels column (``Cardiomegaly=1, Edema=0``) and/or a prompt column (free text allowed); an
  optional report column (image–report pairs) and reference column (the real report each generated report is
  scored against).
- otherwise images in DIR (recursively) with an optional JSON sidecar of the same stem (keys
  ``labels`` and/or ``prompt``, ``report``, ``seed``, ...).
- a reports CSV: a generated-report column plus a reference-text column or a ``study_id``
  column (the reference is then looked up in the real data's report sections).

Labels come from a ``labels`` field, else from the prompt: this library's template prompts
(:func:`~cxr_irgen.data.labels.labels_to_prompt`) parse back exactly; free text is labelled
with the configured labeler (``prompt_labels``: auto | template | labeler). Each row records
how (``labels_from``).

Columns of the result: ``image`` (absolute path or ''), ``labels`` ((14,) float32 or
None), ``report`` (str or None), ``reference`` (str or None), ``study_id`` (or None),
``prompt`` (str or None), ``labels_from`` (str or None).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_irgen.data.imageio import IMAGE_SUFFIXES
from cxr_irgen.data.labels import PROMPT_PREFIX, parse_labels, prompt_to_labels
from cxr_irgen.errors import UserError

COLUMNS = ("image", "labels", "report", "reference", "study_id", "prompt", "labels_from")
IMAGE_COLUMNS = ("image", "img_savename", "image_path", "path", "file", "filename")  # tried in order by image_column=auto
PROMPT_MODES = ("auto", "template", "labeler")
FROM_LABELS, FROM_TEMPLATE = "labels column", "template prompt"


@dataclass
class InputSpec:
    """How to read a prompts table beside ``generated=DIR`` (``eval.inputs``)."""

    table: str | None = None          # CSV or JSONL: a file in DIR, else a path as given
    image_column: str | None = "auto"  # a column name, auto (first of IMAGE_COLUMNS present) or null (images named by row index)
    prompt_column: str = "prompt"
    labels_column: str | None = None
    report_column: str | None = None
    reference_column: str | None = None
    prompt_labels: str = "auto"       # auto | template | labeler

    @classmethod
    def from_cfg(cls, inputs) -> "InputSpec":
        """From ``eval.inputs`` (a mapping; missing keys keep their defaults)."""
        if not inputs:
            return cls()
        known = {k: inputs[k] for k in cls.__dataclass_fields__ if k in inputs}
        unknown = set(inputs) - set(known)
        if unknown:
            raise UserError(f"eval.inputs: unknown key(s) {sorted(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        spec = cls(**{k: (None if v is None else str(v)) for k, v in known.items()})
        if spec.prompt_labels not in PROMPT_MODES:
            raise UserError(f"eval.inputs.prompt_labels={spec.prompt_labels!r}: use {', '.join(PROMPT_MODES)}")
        return spec


def _present(value) -> bool:
    return value is not None and value == value and str(value).strip() != ""


def _row(record: dict, image: Path | None, where: str, prompt_labels: str = "auto") -> dict:
    """One output row; ``labels`` stays None for a free-text prompt (labelled later, all at once)."""
    if image is not None and not image.is_file():
        raise UserError(f"{where}: image {image} does not exist")
    labels, labels_from, prompt = None, None, record.get("prompt")
    if _present(record.get("labels")):
        labels, labels_from = parse_labels(str(record["labels"])), FROM_LABELS
    elif _present(prompt):
        if prompt_labels != "labeler" and (prompt_labels == "template" or str(prompt).startswith(PROMPT_PREFIX)):
            try:
                labels, labels_from = prompt_to_labels(str(prompt)), FROM_TEMPLATE
            except UserError as err:  # auto: free text that starts like a template prompt goes to the labeler
                if prompt_labels == "template":
                    raise UserError(f"{where}: {err} (eval.inputs.prompt_labels=auto or labeler labels free text)") from None
    return {
        "image": str(image.resolve()) if image is not None else "",
        "labels": labels, "labels_from": labels_from, "prompt": str(prompt) if _present(prompt) else None,
        "report": record.get("report") if _present(record.get("report")) else None,
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


def _from_sidecars(folder: Path, prompt_labels: str) -> list[dict]:
    rows = []
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        sidecar = image.with_suffix(".json")
        record = {}
        if sidecar.is_file():
            try:
                record = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise UserError(f"sidecar {sidecar} is not JSON: {err.msg}") from None
        rows.append(_row(record, image, str(sidecar), prompt_labels))
    return rows


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV (``.csv``/``.tsv``) or JSON-lines (``.jsonl``/``.json``) file as a string table."""
    if not path.is_file():
        raise UserError(f"{what}={path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False).astype(object).where(lambda t: t.notna(), None)
        return pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
    except ValueError as err:
        raise UserError(f"{what}={path} is not readable as {suffix.lstrip('.') or 'csv'}: {' '.join(str(err).split())[:200]}") from None


def _images_by_row(folder: Path, n_rows: int, table: Path) -> list[Path]:
    """Images named by their row's index (``7.png``, ``00007.jpg``): one per row, in row order."""
    by_index: dict[int, Path] = {}
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        if image.stem.isdigit():
            by_index.setdefault(int(image.stem), image)
    missing = [i for i in range(n_rows) if i not in by_index]
    if missing:
        raise UserError(f"eval.inputs.image_column=null: images are named by row index of {table}, but {folder} has no image named "
                        f"{missing[0]} (e.g. {missing[0]}.png or {missing[0]:05d}.png); {len(missing)} of {n_rows} rows have none")
    return [by_index[i] for i in range(n_rows)]


def _from_prompts_table(folder: Path, spec: InputSpec) -> list[dict]:
    path = folder / spec.table if (folder / spec.table).is_file() else Path(spec.table)  # beside the images, else as given
    table = read_table(path, "eval.inputs.table")
    columns = ", ".join(map(str, table.columns))
    image_column = spec.image_column
    if image_column == "auto":
        image_column = next((c for c in IMAGE_COLUMNS if c in table.columns), None)
    for key, column in (("image_column", image_column), ("labels_column", spec.labels_column), ("report_column", spec.report_column),
                        ("reference_column", spec.reference_column)):
        if column and column not in table.columns:
            raise UserError(f"eval.inputs.{key}={column!r}: no such column in {path}; available columns: {columns}")
    if not spec.labels_column and spec.prompt_column not in table.columns:
        raise UserError(f"eval.inputs.prompt_column={spec.prompt_column!r}: no such column in {path} (and no eval.inputs.labels_column); "
                        f"available columns: {columns}")
    if image_column:
        images = [Path(str(v)) if Path(str(v)).is_absolute() else folder / str(v) for v in table[image_column]]
    else:
        images = _images_by_row(folder, len(table), path)
    rows = []
    for number, (record, image) in enumerate(zip(table.to_dict("records"), images)):
        fields = {"prompt": record.get(spec.prompt_column), "labels": record.get(spec.labels_column) if spec.labels_column else None,
                  "report": record.get(spec.report_column) if spec.report_column else None,
                  "reference": record.get(spec.reference_column) if spec.reference_column else None}
        rows.append(_row(fields, image, f"{path} row {number}", spec.prompt_labels))
    return rows


def _from_reports_csv(path: Path, report_column: str, reference_column: str) -> list[dict]:
    table = read_table(path, "generated_reports")
    has_reference = reference_column in table.columns
    if report_column not in table.columns or not (has_reference or "study_id" in table.columns):
        raise UserError(
            f"generated_reports={path} needs a {report_column!r} column (eval.text.report_column) and a {reference_column!r} "
            f"(eval.text.reference_column) or 'study_id' column; available columns: {', '.join(map(str, table.columns))}"
        )
    rows = []
    for number, r in enumerate(table.to_dict("records")):
        study = None
        if not has_reference:
            try:
                study = int(r["study_id"])
            except (TypeError, ValueError):
                raise UserError(f"generated_reports={path} row {number}: study_id {r['study_id']!r} is not a number") from None
        rows.append({"image": "", "labels": None, "report": r[report_column], "reference": r[reference_column] if has_reference else None,
                     "study_id": study, "prompt": None, "labels_from": None})
    return rows


def label_free_text_prompts(table: pd.DataFrame, labeler: dict | None, labeler_name: str) -> pd.DataFrame:
    """Rows with a prompt but no labels get the labeler's (14,) labels of their prompt, ``labels_from`` naming it."""
    todo = table["labels"].isna() & table["prompt"].notna()
    if not todo.any():
        return table
    from cxr_irgen.text.labeler import label_reports

    table = table.copy()
    derived = label_reports(table.loc[todo, "prompt"].tolist(), **(labeler or {}))
    labels = table["labels"].tolist()
    for row, vector in zip(np.flatnonzero(todo.to_numpy()), derived):
        labels[row] = vector
    table["labels"] = pd.Series(labels, index=table.index, dtype=object)
    table.loc[todo, "labels_from"] = f"labeler {labeler_name} on the prompt"
    return table


def load_generated(generated: str | None, reports_csv: str | None = None, report_column: str = "report", reference_column: str = "reference",
                   inputs: InputSpec | None = None, labeler: dict | None = None, labeler_name: str = "rules") -> pd.DataFrame:
    """The generated items of a folder and/or a reports CSV as one table (see module docstring); ``inputs`` reads a
    prompts table beside the folder's images, ``labeler`` (:func:`~cxr_irgen.text.labeler.label_reports` keywords)
    labels free-text prompts."""
    inputs = inputs or InputSpec()
    rows: list[dict] = []
    if generated:
        folder = Path(str(generated))
        if not folder.is_dir():
            raise UserError(f"generated={folder}: no such folder (a generate run dir, images with JSON sidecars, or images with eval.inputs.table)")
        pairs = folder / "pairs.jsonl"
        if inputs.table:
            rows += _from_prompts_table(folder, inputs)
        elif pairs.is_file():
            rows += _from_pairs_jsonl(pairs)
        else:
            rows += _from_sidecars(folder, inputs.prompt_labels)
    if reports_csv:
        rows += _from_reports_csv(Path(str(reports_csv)), report_column, reference_column)
    if not rows:
        raise UserError("nothing to evaluate: give generated=DIR (pairs.jsonl, images with JSON sidecars, or images with eval.inputs.table=FILE) "
                        "and/or generated_reports=FILE.csv")
    return label_free_text_prompts(pd.DataFrame(rows, columns=list(COLUMNS)), labeler, labeler_name)
