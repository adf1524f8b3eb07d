"""End to end on phantoms, CPU: stage 1 → stage 2 → reports for held-out images, labelled by the eval labeler.

The generated reports must agree with the held-out images' CheXpert labels (micro F1 over
positive mentions of the 14 observations) better than always writing the most frequent
training report does, and the prior must read the images: on held-out images its predicted
embeddings are closer (MSE) to the true reports' embeddings than the mean training embedding is.

At this scale (576 training pairs, a tiny ViT prior from scratch on 16 px images) most of
the report-level margin comes from the decoder writing frequent positive findings: the same
reports shuffled across the images score only a little lower.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxr_irgen.cli import run_command

TEXT = "impression"
COMMON = [
    "data.image_size=64", f"text={TEXT}", "language/model=bart-tiny", "language/prior=vit-tiny", "trainer=cpu-tiny",
    "trainer.batch_size=32", "trainer.checkpoint_every=100000", "model.vocab_size=1000", "model.config.d_model=64",
    "model.config.encoder_ffn_dim=256", "model.config.decoder_ffn_dim=256", "model.config.dropout=0.0",
]


def positive_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Micro F1 of positive (1.0) mentions, (N, 14) each."""
    predicted, truth = predicted == 1, truth == 1
    return 2 * float((predicted & truth).sum()) / max(1.0, float(predicted.sum() + truth.sum()))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms-e2e"), n=1200, seed=0, size=64)


@pytest.mark.slow
def test_reports_from_heldout_phantoms_beat_the_most_frequent_report(phantoms, tmp_path):
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import ImageReportDataset, collate
    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.data.selections import language_stage1, language_stage2
    from cxr_irgen.eval.labeler import label_reports
    from cxr_irgen.language.generate import ReportGenerator
    from cxr_irgen.language.train import FEATURES_FILE

    data = [f"data.root={phantoms}", *COMMON]
    run_command("train-language", [*data, "stage=autoencoder", "trainer.max_steps=200", "trainer.lr=3e-3", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path / 'ae'}"])
    run_command("train-language", [*data, "stage=prior", f"autoencoder={tmp_path / 'ae'}", "prior.input=image",
                                   "trainer.max_steps=600", "trainer.lr=1e-3", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path / 'prior'}"])

    data_cfg = OmegaConf.create({"name": "phantom", "root": str(phantoms), "cache_dir": None})
    table = load_table(data_cfg)
    sections = load_sections(table, data_cfg)
    heldout = table[table["split"].isin(["validate", "test"])]
    pairs = ImageReportDataset(language_stage2(heldout.assign(split="test"), "test"), sections, 64, TEXT)
    batch = collate([pairs[i] for i in range(len(pairs))])
    truth = table.set_index("dicom_id").loc[batch["dicom_id"], list(CHEXPERT_LABELS)].to_numpy()

    generator = ReportGenerator.from_run_dir(tmp_path / "prior")
    with torch.no_grad():
        predicted, target = generator.embeddings(batch["pixel_values"]), generator.autoencoder.embed(batch["text"])
    train_mean = load_file(str(tmp_path / "prior" / FEATURES_FILE))["targets"].mean(0, keepdim=True)
    assert ((predicted - target) ** 2).mean() < 0.9 * ((train_mean - target) ** 2).mean()

    reports = generator(batch["pixel_values"], batch_size=64)
    most_frequent = language_stage1(table, sections, TEXT)["text"].value_counts().index[0]
    ours = positive_f1(label_reports(reports), truth)
    baseline = positive_f1(label_reports([most_frequent] * len(reports)), truth)
    assert len(reports) >= 50 and len(set(reports)) > 1
    assert ours > baseline + 0.05, (ours, baseline, reports[:5])
