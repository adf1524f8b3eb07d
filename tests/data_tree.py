"""A tiny hand-written MIMIC-CXR-JPG tree (CSVs, JPEG images, report files) for the data-layer tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.data.mimic import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV, study_dir

# (subject, study, split, [(dicom_id, view)], labels {name: value}, report text or None)
STUDIES = [
    (10000001, 50000001, "train", [("d01", "PA"), ("d02", "LATERAL")], {"Cardiomegaly": 1, "Edema": 0}, "FINDINGS: Enlarged heart.\nIMPRESSION: Cardiomegaly."),
    (10000001, 50000002, "train", [("d03", "AP")], {"Cardiomegaly": 1, "Edema": 0}, "Findings:\n Enlarged heart,\n no edema."),
    (10000002, 50000003, "train", [("d04", "PA"), ("d05", "AP")], {"Cardiomegaly": 1, "Edema": -1}, "IMPRESSION: Cardiomegaly, possible edema."),
    (10000002, 50000004, "train", [("d06", "PA")], {"No Finding": 1}, "FINDINGS AND IMPRESSION: Normal chest."),
    (11000003, 50000005, "train", [("d07", "PA")], {"Pleural Effusion": 1, "Atelectasis": 1}, None),
    (11000003, 50000006, "validate", [("d08", "PA")], {"No Finding": 1}, "FINDINGS: Clear lungs."),
    (12000004, 50000007, "test", [("d09", "PA"), ("d10", "LL")], {"Pneumothorax": 1}, "FINDINGS: Small pneumothorax.\nIMPRESSION: Pneumothorax."),
    (12000004, 50000008, "test", [("d11", "AP")], {}, "IMPRESSION: No change."),
    (12000005, 50000009, "test", [("d12", None)], None, "FINDINGS: Lateral only study."),
]


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = True) -> None:
    text = ",".join(header) + "\n" + "".join(",".join("" if v is None else str(v) for v in row) + "\n" for row in rows)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def write_tree(root: Path, gz: bool = True, images: bool = True, size: int = 24) -> Path:
    """Write the CSVs (real MIMIC names and column order), JPEG images and reports of :data:`STUDIES` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta, split, chexpert = [], [], []
    for subject, study, part, images_of_study, labels, report in STUDIES:
        folder = root / study_dir(subject, study)
        for dicom_id, view in images_of_study:
            meta.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, size, size, 21800101, 120000, "", "", ""])
            split.append([dicom_id, study, subject, part])
            if images:
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{dicom_id}.jpg")
        if labels is not None:
            alphabetical = sorted(CHEXPERT_LABELS)
            chexpert.append([subject, study, *[labels.get(name, "") for name in alphabetical]])
        if report is not None:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.with_suffix(".txt").write_text("                                 FINAL REPORT\n " + report + "\n")
    write_csv(root / METADATA_CSV, ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"], meta, gz)
    write_csv(root / SPLIT_CSV, ["dicom_id", "study_id", "subject_id", "split"], split, gz)
    write_csv(root / CHEXPERT_CSV, ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)], chexpert, gz)
    return root
