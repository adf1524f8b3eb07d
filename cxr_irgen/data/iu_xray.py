"""IU X-ray (Open-i, Indiana University) reports from the torchxrayvision package data.

``torchxrayvision/data/NLMCXR_reports.tgz`` holds 3,955 XML reports (FINDINGS in 3,425,
IMPRESSION in 3,921, both in 3,419), each with MeSH "major" tags and the ids of its images
(7,470). The images themselves are not shipped; point ``image_root`` at the ``NLMCXR_png``
folder to use them (``<image id>.png``).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, canonical_name
from cxr_irgen.data.mimic import INDEX_COLUMNS
from cxr_irgen.errors import UserError

REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
DICOM_METADATA = "nlmcxr_dicom_metadata.csv.gz"

# First component of a MeSH major tag ("Pulmonary Atelectasis/base/left") -> CheXpert observation (positive).
MESH_LABELS = {
    "Cardiomegaly": "Cardiomegaly",
    "Opacity": "Lung Opacity",
    "Airspace Disease": "Lung Opacity",
    "Density": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Pulmonary Atelectasis": "Atelectasis",
    "Pleural Effusion": "Pleural Effusion",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Pneumonia": "Pneumonia",
    "Consolidation": "Consolidation",
    "Pneumothorax": "Pneumothorax",
    "Nodule": "Lung Lesion",
    "Mass": "Lung Lesion",
    "Fractures, Bone": "Fracture",
    "Catheters, Indwelling": "Support Devices",
    "Implanted Medical Device": "Support Devices",
    "Medical Device": "Support Devices",
    "Tube, Inserted": "Support Devices",
    "Stents": "Support Devices",
}


# The parts of a report's XML that are read; the rest (image features, citation) is ~85 % of the bytes.
_WANTED_XML = re.compile(rb"<uId [^>]*/>|<Abstract>.*?</Abstract>|<MeSH>.*?</MeSH>|<parentImage id=\"[^\"]*\"", re.S)


def _report_xml(document: bytes) -> ET.Element:
    """Parse only the wanted elements of one report (uId, Abstract, MeSH, parentImage ids): ~10x faster than the whole file."""
    parts = (m.group(0) + b"/>" if m.group(0).startswith(b"<parentImage") else m.group(0) for m in _WANTED_XML.finditer(document))
    return ET.fromstring(b"<report>" + b"".join(parts) + b"</report>")


def xrv_data_file(name: str) -> Path:
    """A data file of the installed torchxrayvision, found without importing it (its import pulls in torch, ~10 s)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("torchxrayvision is not installed: `pip install torchxrayvision` (its wheel ships the IU X-ray reports)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise UserError(f"{path} not found: reinstall torchxrayvision (its wheel ships {name})")
    return path


def _text(root: ET.Element, label: str) -> str:
    for element in root.iter("AbstractText"):
        if element.get("Label") == label:
            return " ".join((element.text or "").split())
    return ""


def load_iu_reports() -> pd.DataFrame:
    """One row per report: uid ('CXR1'), findings, impression, mesh_major ('; '-joined tags),
    normal (True when the only major tag is 'normal'), image_ids ('; '-joined).

    The archive is parsed once per process (a few seconds); later calls return a copy.
    """
    return _parse_reports().copy()


@functools.lru_cache(maxsize=1)
def _parse_reports() -> pd.DataFrame:
    rows = []
    with tarfile.open(xrv_data_file(REPORTS_ARCHIVE)) as archive:
        for member in archive:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            root = _report_xml(archive.extractfile(member).read())
            mesh = [(m.text or "").strip() for m in root.iter("major")]
            rows.append(
                {
                    "uid": root.find("uId").get("id"),
                    "findings": _text(root, "FINDINGS"),
                    "impression": _text(root, "IMPRESSION"),
                    "mesh_major": "; ".join(mesh),
                    "normal": set(mesh) == {"normal"},
                    "image_ids": "; ".join(e.get("id") for e in root.findall("parentImage")),
                }
            )
    reports = pd.DataFrame(rows)
    return reports.assign(_n=reports["uid"].str[3:].astype(int)).sort_values("_n").drop(columns="_n").reset_index(drop=True)


def mesh_to_labels(mesh_major: str, mesh_labels: dict[str, str] | None = None) -> np.ndarray:
    """(14,) labels of one report: 'normal' alone → No Finding=1; each mapped MeSH term → its observation=1; the rest blank."""
    mapping = {term: canonical_name(name) for term, name in (mesh_labels or MESH_LABELS).items()}
    labels = np.full(len(CHEXPERT_LABELS), np.nan, dtype=np.float32)
    terms = {tag.split("/")[0].strip() for tag in mesh_major.split(";") if tag.strip()}
    if terms == {"normal"}:
        labels[LABEL_INDEX["No Finding"]] = 1.0
    for term in terms & mapping.keys():
        labels[LABEL_INDEX[mapping[term]]] = 1.0
    return labels


def _views() -> dict[str, str]:
    meta = pd.read_csv(xrv_data_file(DICOM_METADATA), usecols=["imageid", "View Position"])
    return dict(zip(meta["imageid"], meta["View Position"].fillna("").str.upper()))


def iu_table(image_root: str | Path | None = None, split: str = "test", mesh_labels: dict[str, str] | None = None) -> pd.DataFrame:
    """IU X-ray as an index table (the :func:`~cxr_irgen.data.mimic.load_index` schema plus findings, impression):
    one row per image; study_id = subject_id = the report number; view from the package's DICOM
    metadata; labels from MeSH (:func:`mesh_to_labels`); image_path ``image_root/<id>.png`` ('' without root)."""
    reports = load_iu_reports()
    views = _views()
    root = Path(image_root).resolve() if image_root else None
    rows = []
    for report in reports.itertuples(index=False):
        number = int(report.uid[3:])
        labels = mesh_to_labels(report.mesh_major, mesh_labels)
        for image_id in filter(None, report.image_ids.split("; ")):
            view = views.get(re.sub(r"^(CXR\d+)_\d+_IM", r"\1_IM", image_id), "")
            image_path = str(root / f"{image_id}.png") if root else ""
            rows.append((image_id, number, number, view, split, image_path, "", *labels, report.findings, report.impression))
    table = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, "findings", "impression"])
    return table.astype({name: np.float32 for name in CHEXPERT_LABELS})
