"""The embedded default dataset: procedural phantoms written in the MIMIC-CXR-JPG 2.0.0 layout.

``make_phantoms(out, n, seed, size)`` writes exactly what a MIMIC-CXR-JPG (+ reports) tree
holds, so the data layer reads it like MIMIC::

    out/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, Rows, ...
    out/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 labels (MIMIC's alphabetical order)
    out/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    out/files/p10/p10000032/s50414267/<dicom_id>.jpg   grayscale JPEG, size x size
    out/files/p10/p10000032/s50414267.txt              free-text report
    out/phantom.json                      marks the tree as phantoms (n, seed, size)

Label vectors are real rows of CheXpert's training table (``chexpert_train.csv.gz`` from
torchxrayvision), so label frequencies and co-occurrences are real, except that a
fraction ``KEY_FRACTION`` of studies is drawn from rows with Cardiomegaly=1 and the same
fraction from rows with No Finding=1 (real frequencies 12% and 10%); this keeps both at
roughly 20% or more of the studies so small trees still hold enough of each for the tests.
Everything is deterministic by ``seed``: each image is drawn from its own generator seeded
by ``(seed, image number)``, so the result does not depend on the number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from importlib import util
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, POSITIVE
from cxr_irgen.data.phantom_render import render_phantom, sample_phantom
from cxr_irgen.data.phantom_reports import report_sides, write_report
from cxr_irgen.errors import UserError
from cxr_irgen.utils.progress import progress_bar

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
MARKER = "phantom.json"
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
MIMIC_LABEL_ORDER = tuple(sorted(CHEXPERT_LABELS))
KEY_FRACTION = 0.15
SPLITS = (("train", 0.8), ("validate", 0.1), ("test", 0.1))
PROCEDURES = {"PA": "CHEST (PA AND LAT)", "AP": "CHEST (PORTABLE AP)"}
VIEW_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
CSV_GZIP = {"method": "gzip", "mtime": 0}


@lru_cache(maxsize=1)
def chexpert_label_table() -> np.ndarray:
    """The 14 label columns of CheXpert's real training table, (223414, 14) float32 (NaN = blank)."""
    spec = util.find_spec("torchxrayvision")  # locates the package data without importing torch
    if spec is None or not spec.submodule_search_locations:
        raise UserError("torchxrayvision is not installed; it ships chexpert_train.csv.gz (pip install torchxrayvision)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "chexpert_train.csv.gz"
    table = pd.read_csv(path, usecols=list(CHEXPERT_LABELS), dtype="float32", engine="pyarrow")
    return table[list(CHEXPERT_LABELS)].to_numpy()


@dataclass(frozen=True)
class PhantomImage:
    """One image to draw: where it goes, its view, its study's labels and its own seed."""

    number: int
    path: Path
    view: str
    labels: np.ndarray
    seed: int


def _sample_rows(rng: np.random.Generator, table: np.ndarray, count: int) -> np.ndarray:
    cardiomegaly = np.flatnonzero(table[:, LABEL_INDEX["Cardiomegaly"]] == POSITIVE)
    no_finding = np.flatnonzero(table[:, LABEL_INDEX["No Finding"]] == POSITIVE)
    source = rng.random(count)
    rows = rng.integers(len(table), size=count)
    rows = np.where(source < KEY_FRACTION, cardiomegaly[rng.integers(len(cardiomegaly), size=count)], rows)
    rows = np.where((source >= KEY_FRACTION) & (source < 2 * KEY_FRACTION), no_finding[rng.integers(len(no_finding), size=count)], rows)
    return table[rows]


def _unique_ids(rng: np.random.Generator, low: int, high: int, count: int) -> np.ndarray:
    ids = np.unique(rng.integers(low, high, size=count * 2))
    return rng.permutation(ids)[:count]


def _study_date(rng: np.random.Generator) -> tuple[int, float]:
    date = 21100101 + int(rng.integers(0, 80)) * 10000 + int(rng.integers(0, 12)) * 100 + int(rng.integers(0, 28))
    time = int(rng.integers(0, 24)) * 10000 + int(rng.integers(0, 60)) * 100 + int(rng.integers(0, 60)) + round(float(rng.random()), 3)
    return date, time


def plan_phantoms(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Patients, studies, views and labels for ``n`` images: (metadata, chexpert, split) tables as MIMIC has them."""
    rng = np.random.default_rng([seed, 0])
    table = chexpert_label_table()
    max_studies = n  # at least one image per study
    study_labels = _sample_rows(rng, table, max_studies)
    subject_ids = _unique_ids(rng, 10_000_000, 20_000_000, max_studies)
    study_ids = _unique_ids(rng, 50_000_000, 60_000_000, max_studies)
    meta, chexpert, images = [], [], 0
    study, patient = 0, 0
    while images < n:
        subject = int(subject_ids[patient])
        patient += 1
        for _ in range(1 + min(int(rng.geometric(0.55)) - 1, 3)):
            if images >= n:
                break
            labels = study_labels[study]
            frontal = "AP" if rng.random() < (0.75 if labels[LABEL_INDEX["Support Devices"]] == POSITIVE else 0.35) else "PA"
            views = [frontal] + (["LATERAL"] if rng.random() < 0.55 else []) + ([frontal] if rng.random() < 0.08 else [])
            views = views[: n - images]
            date, time = _study_date(rng)
            orientation = "Recumbent" if frontal == "AP" and rng.random() < 0.5 else "Erect"
            sid = int(study_ids[study])
            for view in views:
                dicom = "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5, dtype=np.uint64))
                meta.append({
                    "dicom_id": dicom, "subject_id": subject, "study_id": sid,
                    "PerformedProcedureStepDescription": PROCEDURES[frontal], "ViewPosition": view,
                    "StudyDate": date, "StudyTime": time, "ProcedureCodeSequence_CodeMeaning": PROCEDURES[frontal],
                    "ViewCodeSequence_CodeMeaning": VIEW_MEANINGS[view],
                    "PatientOrientationCodeSequence_CodeMeaning": orientation,
                })
            images += len(views)
            chexpert.append({"subject_id": subject, "study_id": sid, **dict(zip(CHEXPERT_LABELS, labels))})
            study += 1
    patients = rng.permutation(subject_ids[:patient])
    bounds = np.cumsum([round(share * len(patients)) for _, share in SPLITS[:-1]])
    split_of = {int(s): name for (name, _), group in zip(SPLITS, np.split(patients, bounds)) for s in group}
    metadata = pd.DataFrame(meta)
    chexpert_table = pd.DataFrame(chexpert)[["subject_id", "study_id", *MIMIC_LABEL_ORDER]]
    split = metadata[["dicom_id", "study_id", "subject_id"]].assign(split=metadata["subject_id"].map(split_of))
    return metadata, chexpert_table, split


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    """``root/files/p10/p10000032/s50414267`` (the report is this path + '.txt')."""
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _draw_image(job: PhantomImage, size: int) -> None:
    pixels = render_phantom(phantom_params(job.seed, job.number, job.view), job.labels, size)
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(job.path, quality=95)


def _draw_chunk(jobs: list[PhantomImage], size: int) -> int:
    for job in jobs:
        _draw_image(job, size)
    return len(jobs)


def phantom_params(seed: int, number: int, view: str) -> dict:
    """The phantom parameters of image ``number`` of a tree built with ``seed`` (as drawn by make_phantoms)."""
    return sample_phantom(np.random.default_rng([seed, 1, number]), view)


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; give a directory for the phantom tree")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UserError(f"out={out} is not empty and is not a phantom tree; choose a new or empty directory")
        for child in out.iterdir():  # an earlier phantom tree (and any caches in it) is replaced as a whole
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_phantoms(out: Path, n: int = 2000, seed: int = 0, size: int = 256, workers: int | None = None,
                  progress: bool = False) -> Path:
    """Write a phantom dataset of ``n`` images (size x size JPEG) in the MIMIC-CXR-JPG layout under ``out``; returns ``out``.

    ``workers`` processes draw the images (None: 2 when the job is big enough to pay for them,
    else 1); the result is identical for any number of workers.
    """
    if n < 1 or size < 16:
        raise UserError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    out = Path(out)
    _prepare_out(out)
    metadata, chexpert, split = plan_phantoms(n, seed)
    metadata = metadata.assign(Rows=size, Columns=size)[list(METADATA_COLUMNS)]
    label_matrix = dict(zip(chexpert["study_id"], chexpert[list(CHEXPERT_LABELS)].to_numpy(np.float32)))
    first_image = metadata.reset_index().groupby("study_id", sort=False).first()
    report_rng = np.random.default_rng([seed, 2])
    for row in chexpert.itertuples(index=False):
        folder = study_dir(out, row.subject_id, row.study_id)
        folder.mkdir(parents=True, exist_ok=True)
        first = first_image.loc[row.study_id]
        sides = report_sides(phantom_params(seed, int(first["index"]), first["ViewPosition"]))
        folder.with_suffix(".txt").write_text(write_report(label_matrix[row.study_id], first["ViewPosition"], sides, report_rng))
    jobs = [
        PhantomImage(number, study_dir(out, row.subject_id, row.study_id) / f"{row.dicom_id}.jpg", row.ViewPosition,
                     label_matrix[row.study_id], seed)
        for number, row in enumerate(metadata.itertuples(index=False))
    ]
    _draw_all(jobs, size, workers, progress)
    metadata.to_csv(out / METADATA_CSV, index=False, compression=CSV_GZIP)
    chexpert.to_csv(out / CHEXPERT_CSV, index=False, compression=CSV_GZIP)
    split.to_csv(out / SPLIT_CSV, index=False, compression=CSV_GZIP)
    (out / MARKER).write_text(json.dumps({"generator": "cxr_irgen phantoms", "n": n, "seed": seed, "size": size}) + "\n")
    return out


def _draw_all(jobs: list[PhantomImage], size: int, workers: int | None, progress: bool) -> None:
    if workers is None:
        workers = 2 if len(jobs) * size * size > 300 * 128 * 128 and (os.cpu_count() or 1) > 1 else 1
    bar = progress_bar(total=len(jobs), desc="phantoms", unit="img", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _draw_image(job, size)
            bar.update(1)
    else:
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_draw_chunk, jobs[i:i + chunk], size) for i in range(0, len(jobs), chunk)]
            for future in futures:
                bar.update(future.result())
    bar.close()


def _read_tree(root: Path) -> pd.DataFrame:
    """One row per image: metadata joined with its study's labels and its split."""
    root = Path(root)
    missing = [name for name in (METADATA_CSV, CHEXPERT_CSV, SPLIT_CSV) if not (root / name).exists()]
    if missing:
        raise UserError(f"{root} is not a MIMIC-CXR-JPG tree: missing {', '.join(missing)}")
    metadata = pd.read_csv(root / METADATA_CSV)
    chexpert = pd.read_csv(root / CHEXPERT_CSV)
    split = pd.read_csv(root / SPLIT_CSV)
    return metadata.merge(chexpert, on=["subject_id", "study_id"], how="left").merge(
        split[["dicom_id", "split"]], on="dicom_id", how="left"
    )


def summarize(root: Path) -> str:
    """A text table of a tree: images/studies/patients per split, images per view, studies per positive label."""
    images = _read_tree(root)
    studies = images.drop_duplicates("study_id")
    lines = [f"phantom dataset at {root}", "", f"{'split':<10}{'images':>8}{'studies':>9}{'patients':>10}"]
    for name, _ in SPLITS:
        part = images[images["split"] == name]
        lines.append(f"{name:<10}{len(part):>8}{part['study_id'].nunique():>9}{part['subject_id'].nunique():>10}")
    lines.append(f"{'total':<10}{len(images):>8}{len(studies):>9}{images['subject_id'].nunique():>10}")
    lines += ["", f"{'view':<10}{'images':>8}"]
    lines += [f"{view:<10}{count:>8}" for view, count in images["ViewPosition"].value_counts().items()]
    lines += ["", f"{'label (positive)':<28}{'studies':>8}{'share':>8}"]
    for name in CHEXPERT_LABELS:
        count = int((studies[name] == POSITIVE).sum())
        lines.append(f"{name:<28}{count:>8}{count / max(1, len(studies)):>8.1%}")
    return "\n".join(lines)


def contact_sheet(root: Path, out_png: Path, per_row: int = 6, tile: int = 128) -> Path:
    """A PNG of phantoms grouped by label: one row per observation (frontal positives), then one row of views."""
    images = _read_tree(root)
    images = images.assign(path=[
        study_dir(Path(root), s, t) / f"{d}.jpg" for s, t, d in zip(images["subject_id"], images["study_id"], images["dicom_id"])
    ])
    frontal = images[images["ViewPosition"].isin(["PA", "AP"])]
    rows = [(name, frontal[frontal[name] == POSITIVE]["path"].tolist()[:per_row]) for name in CHEXPERT_LABELS]
    views = [images[images["ViewPosition"] == view]["path"].tolist()[:2] for view in ("PA", "AP", "LATERAL")]
    rows.append(("Views: PA, AP, LATERAL", [p for group in views for p in group][:per_row]))
    label_width = 190
    sheet = Image.new("L", (label_width + per_row * tile, len(rows) * tile), color=0)
    draw = ImageDraw.Draw(sheet)
    for r, (name, paths) in enumerate(rows):
        draw.text((6, r * tile + tile // 2 - 6), name, fill=255)
        for c, path in enumerate(paths):
            with Image.open(path) as image:
                sheet.paste(image.convert("L").resize((tile, tile)), (label_width + c * tile, r * tile))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def run(cfg) -> None:
    """`cxr-irgen make-phantoms out=DIR n=2000 seed=0 size=256`: write the tree, print its summary, save a contact sheet."""
    from cxr_irgen.utils.rundir import run_dir

    root = make_phantoms(Path(cfg.out), n=int(cfg.n), seed=int(cfg.seed), size=int(cfg.size),
                         workers=cfg.get("workers"), progress=True)
    summary = summarize(root)
    out = run_dir(cfg)
    (out / "summary.txt").write_text(summary + "\n")
    sheet = contact_sheet(root, out / "contact_sheet.png")
    print(summary)
    print(f"\nwrote {root} and {sheet}")
