"""Held-out phantoms and the two controls a report-learning test must beat: always writing the most frequent
training report, and the same reports shuffled across the images (so the reports depend on their image)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch


def positive_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Micro F1 of positive (1.0) mentions, (N, 14) each."""
    predicted, truth = predicted == 1, truth == 1
    return 2 * float((predicted & truth).sum()) / max(1.0, float(predicted.sum() + truth.sum()))


def heldout(root: Path, text: str, one_per_study: bool) -> tuple[torch.Tensor, np.ndarray, str]:
    """Validate + test images (one frontal per study, or every PA/AP image), (N, 1, 64, 64); their label rows, (N, 14);
    and the most frequent training report of the same selection."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import ImageReportDataset, collate
    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.data.selections import language_stage1, language_stage2
    from cxr_irgen.report_models.train import report_pairs

    data_cfg = OmegaConf.create({"name": "phantom", "root": str(root), "cache_dir": None})
    table = load_table(data_cfg)
    sections = load_sections(table, data_cfg)
    merged = table.assign(split=table["split"].replace({"validate": "test"}))
    if one_per_study:
        pairs = ImageReportDataset(language_stage2(merged, "test"), sections, 64, text)
        most_frequent = language_stage1(table, sections, text)["text"].value_counts().index[0]
    else:
        pairs = report_pairs(merged, sections, "test", ["PA", "AP"], text, 64)
        most_frequent = Counter(report_pairs(table, sections, "train", ["PA", "AP"], text, 64).texts).most_common(1)[0][0]
    batch = collate([pairs[i] for i in range(len(pairs))])
    truth = table.set_index("dicom_id").loc[batch["dicom_id"], list(CHEXPERT_LABELS)].to_numpy()
    return batch["pixel_values"], truth, most_frequent


def assert_beats_controls(reports: list[str], truth: np.ndarray, most_frequent: str, min_reports: int = 50, margin: float = 0.05) -> None:
    """Labeler F1 of ``reports`` beats the most frequent report and the mean of 5 shufflings by ``margin``."""
    from cxr_irgen.text.labeler import label_reports

    labels = label_reports(reports)
    ours = positive_f1(labels, truth)
    baseline = positive_f1(label_reports([most_frequent] * len(reports)), truth)
    shuffled = float(np.mean([positive_f1(labels[np.random.default_rng(k).permutation(len(labels))], truth) for k in range(5)]))
    assert len(reports) >= min_reports and len(set(reports)) > 1
    assert ours > baseline + margin, (ours, baseline, reports[:3])
    assert ours > shuffled + margin, (ours, shuffled)
