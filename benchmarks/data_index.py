"""Data-layer speed at full MIMIC-CXR scale (377,110 images, 227,835 studies, 65,379 patients).

Writes a synthetic metadata/chexpert/split CSV set (real column names, gzipped; label rows
drawn from the real CheXpert table in torchxrayvision) into a temporary folder and times,
each against the obvious implementation measured in the same run:

* index build from the CSVs (``load_index(rebuild=True)``) vs pandas with default options,
  row-wise path building and one ``os.path.exists`` per study;
* cached index load vs the build from CSV;
* 100,000 reference lookups vs a linear scan of the label table per query (1,000 queries, extrapolated);
* section extraction of 227,835 varied synthetic reports vs a per-line state machine (same
  output checked; best of alternating rounds, since the machine is shared).

No report files are written, so the index build also pays for looking up 65,379 absent
subject folders. Usage: ``python benchmarks/data_index.py [--out DIR] [--scale 1.0]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import pandas as pd

from cxr_irgen.data.iu_xray import xrv_data_file
from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.data.mimic import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV, load_index
from cxr_irgen.data.reference import ReferenceIndex
from cxr_irgen.data.sections import extract_sections

N_IMAGES, N_STUDIES, N_SUBJECTS = 377_110, 227_835, 65_379
N_LOOKUPS, N_SCAN_LOOKUPS = 100_000, 1_000
SECTION_ROUNDS = 3
TARGETS_S = {"index_build": 15.0, "index_cached_load": 2.0, "reference_lookups": 1.0, "section_extraction": 60.0}


def write_csvs(root: Path, rng: np.random.Generator) -> None:
    subjects = 10_000_000 + rng.choice(10_000_000, N_SUBJECTS, replace=False)
    study_subject = np.concatenate([subjects, rng.choice(subjects, N_STUDIES - N_SUBJECTS)])
    studies = 50_000_000 + rng.choice(10_000_000, N_STUDIES, replace=False)
    image_study = np.concatenate([np.arange(N_STUDIES), rng.integers(0, N_STUDIES, N_IMAGES - N_STUDIES)])
    image_study.sort()
    dicom_ids = [f"{a:08x}-{b:08x}-{c:08x}-{d:08x}-{e:08x}" for a, b, c, d, e in rng.integers(0, 2**32, (N_IMAGES, 5))]
    views = rng.choice(np.array(["PA", "AP", "LATERAL", "LL", ""]), N_IMAGES, p=[0.25, 0.39, 0.3, 0.05, 0.01])
    subject_split = dict(zip(subjects, rng.choice(np.array(["train", "validate", "test"]), N_SUBJECTS, p=[0.978, 0.008, 0.014])))
    meta = pd.DataFrame(
        {
            "dicom_id": dicom_ids,
            "subject_id": study_subject[image_study],
            "study_id": studies[image_study],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": views,
            "Rows": 3056,
            "Columns": 2544,
            "StudyDate": 21800506,
            "StudyTime": 213014.531,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )
    meta.to_csv(root / f"{METADATA_CSV}.gz", index=False)
    split = meta[["dicom_id", "study_id", "subject_id"]].assign(split=[subject_split[s] for s in meta["subject_id"]])
    split.to_csv(root / f"{SPLIT_CSV}.gz", index=False)
    real = pd.read_csv(xrv_data_file("chexpert_train.csv.gz"), usecols=list(CHEXPERT_LABELS))
    labelled = rng.random(N_STUDIES) < 0.995
    labels = real.iloc[rng.integers(0, len(real), int(labelled.sum()))].reset_index(drop=True)
    chexpert = pd.concat([pd.DataFrame({"subject_id": study_subject[labelled], "study_id": studies[labelled]}), labels], axis=1)
    chexpert[["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]].to_csv(root / f"{CHEXPERT_CSV}.gz", index=False)


def reference_build(root: Path) -> pd.DataFrame:
    """The obvious index build: default pandas reads, merges, row-wise paths, one exists() per study."""
    meta = pd.read_csv(root / f"{METADATA_CSV}.gz")
    split = pd.read_csv(root / f"{SPLIT_CSV}.gz")
    chexpert = pd.read_csv(root / f"{CHEXPERT_CSV}.gz")
    index = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left").merge(chexpert.drop(columns="subject_id"), on="study_id", how="left")
    folder = index.apply(lambda r: os.path.join(str(root), "files", f"p{str(r.subject_id)[:2]}", f"p{r.subject_id}", f"s{r.study_id}"), axis=1)
    index["image_path"] = folder + "/" + index["dicom_id"] + ".jpg"
    report_exists = {f: os.path.exists(f + ".txt") for f in folder.unique()}
    index["report_path"] = [f + ".txt" if report_exists[f] else "" for f in folder]
    return index


def scan_lookup(labels: np.ndarray, ids: np.ndarray, query: np.ndarray, exclude: str, rng: np.random.Generator) -> str:
    """The obvious lookup: compare the query with every row of the table (exact key only)."""
    same = ((labels == query) | (np.isnan(labels) & np.isnan(query))).all(axis=1) & (ids != exclude)
    candidates = np.flatnonzero(same)
    return ids[rng.choice(candidates)] if len(candidates) else ""


PHRASES = [
    "The lungs are clear", "There is no pleural effusion or pneumothorax", "Heart size is normal", "Moderate cardiomegaly is present",
    "Mild pulmonary vascular congestion", "Patchy opacity at the right lung base may reflect atelectasis", "No focal consolidation",
    "Endotracheal tube terminates 4 cm above the carina", "Small bilateral pleural effusions", "The mediastinal contours are unremarkable",
]


def synthetic_reports(n: int, rng: np.random.Generator) -> list[str]:
    """Varied MIMIC-like reports: header spellings, cases, wrapping, missing and combined sections."""
    findings_headers = ["FINDINGS:", "Findings:", "FINDINGS:\n", "findings:", "FINDINGS AND IMPRESSION:", "FINDINGS/IMPRESSION\n", ""]
    reports = []
    picks = rng.integers(0, len(PHRASES), (n, 6))
    header_picks = rng.integers(0, len(findings_headers), n)
    flags = rng.random((n, 3))
    for phrases, header, flag in zip(picks, header_picks, flags):
        body = ". ".join(PHRASES[p] for p in phrases[:4]) + "."
        body = re.sub(r"((?:\S+ ){9})", "\\1\n ", body)  # wrap every 9 words, MIMIC-style leading space
        text = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough\n\n"
        if flag[0] < 0.8:
            text += " COMPARISON:  ___\n\n"
        text += f" {findings_headers[header]} {body}\n\n"
        if flag[1] < 0.85:
            text += f" IMPRESSION: \n\n {PHRASES[phrases[4]]}. {PHRASES[phrases[5]]}.\n"
        if flag[2] < 0.1:
            text += "\n NOTIFICATION:  The findings were discussed with Dr. ___ at 10:30.\n"
        reports.append(text)
    return reports


NAIVE_HEADERS = {"FINDINGS": ("findings",), "IMPRESSION": ("impression",), "FINDINGS AND IMPRESSION": ("findings", "impression"), "FINDINGS/IMPRESSION": ("findings", "impression")}


def naive_sections(text: str) -> dict[str, str]:
    """The obvious per-line state machine: a line starting with a known header switches section."""
    found = {"findings": [], "impression": []}
    current: tuple[str, ...] = ()
    for line in text.splitlines():
        head, colon, rest = line.strip().partition(":")
        name = head.strip().upper()
        if name in NAIVE_HEADERS or (colon and name.isupper()):
            current = NAIVE_HEADERS.get(name, ())
            line = rest
        for section in current:
            found[section].append(line)
    return {k: " ".join(" ".join(v).split()) for k, v in found.items()}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the synthetic CSVs (default: a temporary folder)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MIMIC-CXR's size (smoke runs; 1: full size)")
    args = parser.parse_args()
    global N_IMAGES, N_STUDIES, N_SUBJECTS, N_LOOKUPS, N_SCAN_LOOKUPS
    N_IMAGES, N_STUDIES, N_SUBJECTS, N_LOOKUPS, N_SCAN_LOOKUPS = (max(10, round(n * args.scale)) for n in (N_IMAGES, N_STUDIES, N_SUBJECTS, N_LOOKUPS, N_SCAN_LOOKUPS))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp) / "mimic"
        root.mkdir(parents=True, exist_ok=True)
        print(f"writing synthetic CSVs to {root} ...", flush=True)
        write_csvs(root, rng)
        cache = Path(tmp) / "cache"
        build_s, index = timed(lambda: load_index(root, cache, rebuild=True))
        cached_s, cached = timed(lambda: load_index(root, cache))
        assert len(index) == N_IMAGES and index["study_id"].nunique() == N_STUDIES and index["subject_id"].nunique() == N_SUBJECTS
        assert len(cached) == N_IMAGES
        reference_build_s, naive = timed(lambda: reference_build(root))
        assert len(naive) == N_IMAGES
        print(f"index build {build_s:.2f} s (obvious: {reference_build_s:.2f} s), cached load {cached_s:.2f} s", flush=True)

        train = index[index["split"] == "train"]
        reference_index_s, reference = timed(lambda: ReferenceIndex.from_index(train))
        rows = rng.integers(0, len(train), N_LOOKUPS)
        labels = train[list(CHEXPERT_LABELS)].to_numpy(np.float32)
        ids = train["dicom_id"].to_numpy()
        queries, excludes = list(labels[rows]), ids[rows].tolist()  # (14,) rows as a training loop holds them
        lookup_s, _ = timed(lambda: [reference.lookup(query, exclude, seed) for seed, (query, exclude) in enumerate(zip(queries, excludes))])
        scan_s, _ = timed(lambda: [scan_lookup(labels, ids, queries[i], excludes[i], rng) for i in range(N_SCAN_LOOKUPS)])
        scan_s *= N_LOOKUPS / N_SCAN_LOOKUPS
        print(f"{N_LOOKUPS:,} lookups {lookup_s:.2f} s (linear scan, extrapolated: {scan_s:.1f} s); reference index built in {reference_index_s:.2f} s", flush=True)

        reports = synthetic_reports(N_STUDIES, rng)
        extracted = [extract_sections(r) for r in reports]
        same_output = extracted == [naive_sections(r) for r in reports]
        best = common.alternate({"ours": lambda: [extract_sections(r) for r in reports], "state_machine": lambda: [naive_sections(r) for r in reports]}, SECTION_ROUNDS)
        extract_s, naive_s = best["ours"], best["state_machine"]
        with_findings = sum(bool(e["findings"]) for e in extracted) / N_STUDIES
        print(f"{N_STUDIES:,} section extractions {extract_s:.2f} s (per-line state machine: {naive_s:.2f} s, same output: {same_output}); {with_findings:.1%} with findings", flush=True)

    measured = {"index_build": build_s, "index_cached_load": cached_s, "reference_lookups": lookup_s, "section_extraction": extract_s}
    obvious = {"index_build": reference_build_s, "index_cached_load": build_s, "reference_lookups": scan_s, "section_extraction": naive_s}
    stages = {
        name: {
            "seconds": round(measured[name], 3),
            "target_s": TARGETS_S[name],
            "meets_target": measured[name] < TARGETS_S[name],
            "obvious_seconds": round(obvious[name], 3),
            "speedup_vs_obvious": round(obvious[name] / measured[name], 2),
        }
        for name in measured
    }
    result = common.result(
        "data_index",
        ours={name: stage["seconds"] for name, stage in stages.items()},
        reference={name: stage["obvious_seconds"] for name, stage in stages.items()},
        ratio=naive_s / extract_s,
        ratio_means=f"section extraction speed vs the per-line state machine (best of {SECTION_ROUNDS} alternating rounds); each stage's own ratio is in stages",
        peak_memory_mb=common.peak_rss_mb(),
        scale={"images": N_IMAGES, "studies": N_STUDIES, "subjects": N_SUBJECTS, "lookups": N_LOOKUPS},
        stages=stages,
        section_output_same_as_state_machine=same_output,
        obvious={
            "index_build": "pandas defaults + row-wise os.path.join + os.path.exists per study",
            "index_cached_load": "index build from CSV",
            "reference_lookups": f"numpy linear scan of the label table per query ({N_SCAN_LOOKUPS:,} queries, extrapolated)",
            "section_extraction": "per-line header state machine",
        },
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
