"""Baselines R2Gen and M2Trans learn from the image on phantoms (CPU): the loss drops, and reports for held-out images agree
with the images' labels better than the most frequent training report and than the same reports shuffled.

Tiny recipe: the encoder is pre-trained on the 14 labels × 3 classes (``train-label-encoder``: M2Trans's recipe;
for R2Gen it stands in for the paper's ImageNet ResNet-101), then frozen, so the decoder trains on cached tokens.
Agreement: micro F1 of positive labels over the 14 observations (the in-house labeler on the generated reports
vs the image's label-table row). The SCST stage then runs on the M2Trans run with the labeler reward.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_irgen.cli import run_command

TEXT = "impression"
COMMON = ["data.image_size=64", "trainer=cpu-tiny", "trainer.batch_size=32", "trainer.checkpoint_every=100000", f"text={TEXT}"]


def positive_micro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    from cxr_irgen.eval.chexpert_f1 import chexpert_f1

    return chexpert_f1(predicted, truth, n_bootstrap=0)["positive_only"]["micro_14"]["value"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms-report-models"), n=1200, seed=0, size=64)


@pytest.fixture(scope="module")
def heldout(phantoms):
    """Pixels of the validate + test frontal images (one per study) and their label-table rows."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import ImageReportDataset, collate
    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.data.selections import language_stage1, language_stage2

    data_cfg = OmegaConf.create({"name": "phantom", "root": str(phantoms), "cache_dir": None})
    table = load_table(data_cfg)
    sections = load_sections(table, data_cfg)
    rows = table[table["split"].isin(["validate", "test"])]
    pairs = ImageReportDataset(language_stage2(rows.assign(split="test"), "test"), sections, 64, TEXT)
    batch = collate([pairs[i] for i in range(len(pairs))])
    truth = table.set_index("dicom_id").loc[batch["dicom_id"], list(CHEXPERT_LABELS)].to_numpy()
    most_frequent = language_stage1(table, sections, TEXT)["text"].value_counts().index[0]
    return batch["pixel_values"], truth, most_frequent


@pytest.mark.slow
@pytest.mark.parametrize("encoder,decoder", [("resnet-tiny", "r2gen-tiny"), ("dve-tiny", "m2-tiny")])
def test_report_model_beats_the_most_frequent_and_the_shuffled_reports(phantoms, heldout, tmp_path, encoder, decoder):
    from cxr_irgen.eval.labeler import label_reports
    from cxr_irgen.report_models.interface import load_report_generator

    data = [f"data.root={phantoms}", *COMMON]
    run_command("train-label-encoder", [*data, f"encoder={encoder}", "trainer.max_steps=300", "trainer.lr=2e-3", f"hydra.run.dir={tmp_path / 'labels'}"])
    run_command("train-report-model", [*data, f"encoder={encoder}", f"encoder_args.checkpoint={tmp_path / 'labels'}", "+encoder_args.frozen=true",
                                       f"decoder={decoder}", "trainer.max_steps=300", "trainer.lr=1e-3", "evaluation.max_reports=0",
                                       f"hydra.run.dir={tmp_path / 'model'}"])
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["train_loss_last"] < 0.5 * metrics["train_loss_first"], metrics

    pixels, truth, most_frequent = heldout
    reports = load_report_generator(tmp_path / "model")(pixels, batch_size=64, num_beams=1)
    labels = label_reports(reports)
    ours = positive_micro_f1(labels, truth)
    baseline = positive_micro_f1(label_reports([most_frequent] * len(reports)), truth)
    shuffled = np.mean([positive_micro_f1(labels[np.random.default_rng(k).permutation(len(labels))], truth) for k in range(5)])
    assert len(reports) >= 50 and len(set(reports)) > 1
    assert ours > baseline + 0.05, (ours, baseline, reports[:3])
    assert ours > shuffled + 0.05, (ours, shuffled)

    if decoder == "m2-tiny":  # M2Trans's second stage: SCST with the labeler reward runs and saves a loadable generator
        run_command("train-report-scst", [*data, f"model_run={tmp_path / 'model'}", "trainer.max_steps=5", "trainer.lr=1e-5", "trainer.batch_size=16",
                                          "max_length=40", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path / 'scst'}"])
        scst = json.loads((tmp_path / "scst" / "metrics.json").read_text())
        assert scst["steps"] == 5 and 0.0 <= scst["reward_greedy_first"] <= 1.0
        assert len(load_report_generator(tmp_path / "scst")(pixels[:4], num_beams=1)) == 4
