"""The phantom dataset: MIMIC-CXR-JPG layout, determinism, real label statistics, signs in the pixels, reports, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import refused
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxr_irgen.cli import run_command
from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, empty_labels
from cxr_irgen.data.phantom_render import SIGNS, UNCERTAIN_STRENGTH, render_phantom, sample_phantom
from cxr_irgen.data.phantom_signs import costophrenic_blunting, heart_width_ratio, lung_brightness
from cxr_irgen.data.phantoms import KEY_FRACTION, chexpert_label_table, contact_sheet, make_phantoms, plan_phantoms, study_dir, summarize
from cxr_irgen.errors import UserError

METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_csv(root / f"mimic-cxr-2.0.0-{name}.csv.gz") for name in ("metadata", "chexpert", "split"))


def _images(root: Path) -> pd.DataFrame:
    """One row per image with its study's labels and pixels path."""
    metadata, chexpert, _ = _tables(root)
    images = metadata.merge(chexpert, on=["subject_id", "study_id"])
    paths = [study_dir(root, s, t) / f"{d}.jpg" for s, t, d in zip(images.subject_id, images.study_id, images.dicom_id)]
    return images.assign(path=paths)


def _load(path: Path, size: int | None = None) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("L")
        if size is not None:
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 255.0


def test_layout_and_columns_match_mimic_cxr_jpg(phantom_root):
    metadata, chexpert, split = _tables(phantom_root)
    assert list(metadata.columns) == METADATA_COLUMNS
    assert list(chexpert.columns) == ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert len(metadata) == 240 and metadata.dicom_id.is_unique
    assert metadata.dicom_id.str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all()
    assert metadata.subject_id.between(10_000_000, 19_999_999).all()
    assert metadata.study_id.between(50_000_000, 59_999_999).all()
    assert set(metadata.ViewPosition) == {"PA", "AP", "LATERAL"}
    assert (metadata.Rows == 64).all() and (metadata.Columns == 64).all()
    assert set(split.split) == {"train", "validate", "test"}
    assert split.groupby("subject_id").split.nunique().max() == 1, "splits are by patient"
    shares = split.drop_duplicates("subject_id").split.value_counts(normalize=True)
    assert 0.7 < shares["train"] < 0.9 and 0.05 < shares["test"] < 0.15
    assert chexpert.study_id.is_unique and set(chexpert.study_id) == set(metadata.study_id)
    per_study = metadata.groupby("study_id").ViewPosition.agg(list)
    assert per_study.map(len).between(1, 3).all()
    assert per_study.map(lambda views: views[0] in ("PA", "AP")).all(), "every study has a frontal image first"
    values = chexpert[list(CHEXPERT_LABELS)].stack().dropna()
    assert set(values.unique()) <= {1.0, 0.0, -1.0}


def test_every_referenced_file_exists_and_nothing_else(phantom_root):
    images = _images(phantom_root)
    for path in images.path:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "L" and image.size == (64, 64)
    reports = {study_dir(phantom_root, s, t).with_suffix(".txt") for s, t in zip(images.subject_id, images.study_id)}
    assert all(r.is_file() for r in reports)
    on_disk = set((phantom_root / "files").rglob("*.*"))
    assert on_disk == set(images.path) | reports
    for path in on_disk:
        parts = path.relative_to(phantom_root).parts
        assert re.fullmatch(r"p1\d", parts[1]) and parts[2].startswith(parts[1]) and re.fullmatch(r"p\d{8}", parts[2])
        assert re.fullmatch(r"s5\d{7}(\.txt)?", parts[3])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = files(make_phantoms(tmp_path / "a", n=40, seed=3, size=32))
    again = files(make_phantoms(tmp_path / "b", n=40, seed=3, size=32, workers=2))
    other = files(make_phantoms(tmp_path / "c", n=40, seed=4, size=32))
    assert first == again
    assert first.keys() != other.keys()
    assert first["mimic-cxr-2.0.0-chexpert.csv.gz"] != other["mimic-cxr-2.0.0-chexpert.csv.gz"]


def test_label_frequencies_follow_the_real_chexpert_table():
    table = chexpert_label_table()
    assert table.shape == (223414, 14)
    _, chexpert, _ = plan_phantoms(4000, seed=0)
    labels = chexpert[list(CHEXPERT_LABELS)].to_numpy()
    real = (table == 1).mean(axis=0)
    cardiomegaly = (table[table[:, LABEL_INDEX["Cardiomegaly"]] == 1] == 1).mean(axis=0)
    no_finding = (table[table[:, LABEL_INDEX["No Finding"]] == 1] == 1).mean(axis=0)
    expected = (1 - 2 * KEY_FRACTION) * real + KEY_FRACTION * (cardiomegaly + no_finding)
    observed = (labels == 1).mean(axis=0)
    np.testing.assert_allclose(observed, expected, atol=0.03)
    assert observed[LABEL_INDEX["Cardiomegaly"]] > 0.15 and observed[LABEL_INDEX["No Finding"]] > 0.15
    uncertain = (labels == -1).mean(axis=0)
    np.testing.assert_allclose(uncertain, (table == -1).mean(axis=0), atol=0.03)
    effusion, cardio = labels[:, LABEL_INDEX["Pleural Effusion"]] == 1, labels[:, LABEL_INDEX["Cardiomegaly"]] == 1
    real_joint = (table[:, LABEL_INDEX["Pleural Effusion"]] == 1)[table[:, LABEL_INDEX["Cardiomegaly"]] == 1].mean()
    assert abs(effusion[cardio].mean() - real_joint) < 0.06, "co-occurrence P(effusion | cardiomegaly) is real"


def test_small_trees_hold_enough_cardiomegaly_and_no_finding_frontals(phantom_root):
    frontal = _images(phantom_root).query("ViewPosition in ['PA', 'AP']")
    assert (frontal["Cardiomegaly"] == 1).mean() > 0.15
    assert (frontal["No Finding"] == 1).mean() > 0.15


# Where each sign's pixels change: (rows, cols) bounds of the difference's centroid, in image fractions.
SIGN_REGIONS = {
    "Enlarged Cardiomediastinum": ((0.15, 0.5), (0.35, 0.65)),
    "Cardiomegaly": ((0.45, 0.85), (0.3, 0.8)),
    "Lung Opacity": ((0.1, 0.85), (0.0, 1.0)),
    "Lung Lesion": ((0.1, 0.8), (0.0, 1.0)),
    "Edema": ((0.3, 0.7), (0.3, 0.7)),
    "Consolidation": ((0.2, 0.85), (0.0, 1.0)),
    "Pneumonia": ((0.2, 0.85), (0.0, 1.0)),
    "Atelectasis": ((0.45, 0.85), (0.0, 1.0)),
    "Pneumothorax": ((0.05, 0.7), (0.0, 1.0)),
    "Pleural Effusion": ((0.6, 0.9), (0.0, 1.0)),
    "Pleural Other": ((0.25, 0.8), (0.0, 1.0)),
    "Fracture": ((0.1, 0.85), (0.0, 1.0)),
    "Support Devices": ((0.0, 0.8), (0.2, 0.8)),
}
MAX_CHANGED = {"Lung Lesion": 0.02, "Fracture": 0.02, "Atelectasis": 0.12, "Pleural Other": 0.12, "Pneumothorax": 0.12}


@pytest.mark.parametrize("name", SIGNS)
def test_each_sign_changes_pixels_where_expected(name):
    index = LABEL_INDEX[name]
    for seed in range(3):
        params = sample_phantom(np.random.default_rng(seed), "PA")
        without = render_phantom(params, empty_labels(), 128)
        labels = empty_labels()
        labels[index] = 0.0
        np.testing.assert_array_equal(render_phantom(params, labels, 128), without, err_msg="negatives draw nothing")
        labels[index] = 1.0
        diff = np.abs(render_phantom(params, labels, 128) - without)
        assert diff.max() > 0.08, f"{name} is not visible"
        changed = diff > 0.02
        assert 0 < changed.mean() < MAX_CHANGED.get(name, 0.3), f"{name} is not localised"
        rows, cols = np.nonzero(changed)
        weights = diff[rows, cols]
        centroid = (np.average(rows, weights=weights) / 128, np.average(cols, weights=weights) / 128)
        (r0, r1), (c0, c1) = SIGN_REGIONS[name]
        assert r0 <= centroid[0] <= r1 and c0 <= centroid[1] <= c1, f"{name} drawn at {centroid}"
        labels[index] = -1.0
        faint = np.abs(render_phantom(params, labels, 128) - without)
        if params["uncertain_shown"][name]:
            assert 0 < faint.sum() < diff.sum() * (UNCERTAIN_STRENGTH + 0.2)
        else:
            assert faint.max() == 0


def test_lateral_view_shows_cardiomegaly_and_effusion():
    params = sample_phantom(np.random.default_rng(0), "LATERAL")
    base = render_phantom(params, empty_labels(), 64)
    for name in ("Cardiomegaly", "Pleural Effusion"):
        labels = empty_labels()
        labels[LABEL_INDEX[name]] = 1.0
        assert np.abs(render_phantom(params, labels, 64) - base).max() > 0.08


def _auroc(positive: list[float], negative: list[float]) -> float:
    scores = np.nan_to_num(np.array(positive + negative), nan=0.0)
    return roc_auc_score([1] * len(positive) + [0] * len(negative), scores)


@pytest.mark.parametrize("size", [32, 64])
def test_heart_width_ratio_separates_cardiomegaly_from_no_finding(phantom_root, size):
    frontal = _images(phantom_root).query("ViewPosition in ['PA', 'AP']")
    cardiomegaly = frontal[frontal["Cardiomegaly"] == 1].path
    normal = frontal[frontal["No Finding"] == 1].path
    assert len(cardiomegaly) >= 20 and len(normal) >= 20
    auroc = _auroc([heart_width_ratio(_load(p, size)) for p in cardiomegaly], [heart_width_ratio(_load(p, size)) for p in normal])
    assert auroc >= 0.95, auroc


def test_heart_width_ratio_at_full_size_and_on_tensors():
    import torch

    table = chexpert_label_table()
    rng = np.random.default_rng(0)
    scores = {}
    for name in ("Cardiomegaly", "No Finding"):
        rows = table[table[:, LABEL_INDEX[name]] == 1]
        images = [render_phantom(sample_phantom(np.random.default_rng([1, i, len(name)]), ("PA", "AP")[i % 2]),
                                 rows[rng.integers(len(rows))], 256) for i in range(12)]
        scores[name] = [heart_width_ratio(torch.from_numpy(image)[None, None]) for image in images]
    assert _auroc(scores["Cardiomegaly"], scores["No Finding"]) >= 0.95
    assert 0.3 < np.median(scores["No Finding"]) < 0.5 < np.median(scores["Cardiomegaly"]) < 0.75


def test_effusion_and_opacity_measures_respond_to_their_signs():
    params = next(p for seed in range(20) if -1.0 in (p := sample_phantom(np.random.default_rng(seed), "PA"))["effusion_sides"])
    clear = render_phantom(params, empty_labels(), 64)
    effusion, opacity = empty_labels(), empty_labels()
    effusion[LABEL_INDEX["Pleural Effusion"]] = 1.0
    opacity[[LABEL_INDEX["Lung Opacity"], LABEL_INDEX["Edema"], LABEL_INDEX["Consolidation"]]] = 1.0
    assert costophrenic_blunting(render_phantom(params, effusion, 64)) > costophrenic_blunting(clear) + 0.02
    assert lung_brightness(render_phantom(params, opacity, 64)) > lung_brightness(clear) + 0.03


def test_views_differ_and_ap_magnifies_the_heart(phantom_root):
    images = _images(phantom_root)
    means = {view: np.mean([_load(p) for p in group.path[:15]], axis=0) for view, group in images.groupby("ViewPosition")}
    for a, b in (("PA", "AP"), ("PA", "LATERAL"), ("AP", "LATERAL")):
        assert np.abs(means[a] - means[b]).mean() > 0.02, (a, b)
    assert np.abs(means["PA"] - means["LATERAL"]).mean() > 0.06
    normal = images[images["No Finding"] == 1]
    ratio = {view: np.nanmedian([heart_width_ratio(_load(p)) for p in normal[normal.ViewPosition == view].path]) for view in ("PA", "AP")}
    assert ratio["AP"] > ratio["PA"]


NEGATION = re.compile(r"\b(no|not|without)\b", re.IGNORECASE)
KEYWORDS = {"Pleural Effusion": "effusion", "Pneumothorax": "pneumothorax", "Edema": "edema", "Consolidation": "consolidation",
            "Atelectasis": "atelectasis", "Pneumonia": "pneumonia", "Fracture": "fracture"}


def test_reports_state_positives_negate_negatives_and_hedge_uncertain(phantom_root):
    _, chexpert, _ = _tables(phantom_root)
    layouts = set()
    for row in chexpert.itertuples(index=False):
        report = study_dir(phantom_root, row.subject_id, row.study_id).with_suffix(".txt").read_text()
        assert report.lstrip().startswith("FINAL REPORT") and "EXAMINATION:" in report and "INDICATION:" in report
        layouts.add(next(h for h in ("FINDINGS AND IMPRESSION:", "Findings:", "FINDINGS:", "IMPRESSION:") if h in report))
        text = report.split("COMPARISON:", 1)[1]  # the findings and impression (an indication may name a suspicion)
        sentences = [s.strip().lower() for s in re.split(r"(?<=\.)\s+", " ".join(text.split()))]
        labels = dict(zip(sorted(CHEXPERT_LABELS), row[2:]))
        for name, word in KEYWORDS.items():
            mentions = [s for s in sentences if word in s]
            value = labels[name]
            if value == 1.0:
                assert any(not NEGATION.search(s) for s in mentions), (name, text)
            elif value == 0.0:
                assert mentions and all(NEGATION.search(s) for s in mentions), (name, text)
            elif value == -1.0:
                assert any(re.search(r"possible|cannot|may|could", s) for s in mentions), (name, text)
            else:
                assert not mentions, (name, text)
        if labels["No Finding"] == 1.0 and not any(v == 1.0 for n, v in labels.items() if n != "No Finding"):
            assert "no acute" in text.lower() or "clear" in text.lower() or "normal" in text.lower()
    assert {"FINDINGS AND IMPRESSION:", "Findings:", "FINDINGS:", "IMPRESSION:"} <= layouts


def test_summary_and_contact_sheet(phantom_root, tmp_path):
    summary = summarize(phantom_root)
    _, chexpert, split = _tables(phantom_root)
    assert re.search(rf"total\s+240\s+{len(chexpert)}\s+{split.subject_id.nunique()}", summary)
    for name in ("train", "validate", "test", "LATERAL", *CHEXPERT_LABELS):
        assert name in summary
    cardiomegaly = int((chexpert["Cardiomegaly"] == 1).sum())
    assert re.search(rf"Cardiomegaly\s+{cardiomegaly}\s", summary)
    sheet = contact_sheet(phantom_root, tmp_path / "sheet.png", per_row=4)
    with Image.open(sheet) as image:
        assert image.size == (190 + 4 * 128, 15 * 128)
        pixels = np.asarray(image)
    assert pixels[2 * 128:3 * 128, 190:].std() > 0.05 * 255, "the Cardiomegaly row shows images"


def test_make_phantoms_command_writes_tree_summary_and_sheet(tmp_path, capsys):
    out = tmp_path / "phantoms"
    run_command("make-phantoms", [f"out={out}", "n=12", "size=32", "seed=1", f"hydra.run.dir={tmp_path / 'run'}"])
    assert len(pd.read_csv(out / "mimic-cxr-2.0.0-metadata.csv.gz")) == 12
    assert (tmp_path / "run" / "contact_sheet.png").is_file() and (tmp_path / "run" / "summary.txt").is_file()
    assert "Cardiomegaly" in capsys.readouterr().out
    run_command("make-phantoms", [f"out={out}", "n=6", "size=32", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert len(list((out / "files").rglob("*.jpg"))) == 6, "an earlier phantom tree is replaced"


def test_refuses_to_overwrite_a_directory_that_is_not_a_phantom_tree(tmp_path, capsys, monkeypatch):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    line = refused(["make-phantoms", f"out={out}", "n=4", "size=32", f"hydra.run.dir={tmp_path / 'run'}"], capsys, tmp_path, monkeypatch)
    assert "not a phantom tree" in line and not (tmp_path / "run").exists()
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="n >= 1"):
        make_phantoms(tmp_path / "empty", n=0)
