"""Baselines R2Gen and M2Trans learn from the image on phantoms (CPU): the loss drops, and reports for held-out images agree
with the images' labels better than the most frequent training report and than the same reports shuffled.

Tiny recipe: the encoder is pre-trained on the 14 labels × 3 classes (``train-label-encoder``: M2Trans's recipe;
for R2Gen it stands in for the paper's ImageNet ResNet-101), then frozen, so the decoder trains on cached tokens.
Agreement: micro F1 of positive labels over the 14 observations (the in-house labeler on the generated reports
vs the image's label-table row). The SCST stage then runs on the M2Trans run with the labeler reward.
"""

from __future__ import annotations

import json

import pytest
import report_controls

from cxr_irgen.cli import run_command

TEXT = "impression"
COMMON = ["data.image_size=64", "trainer=cpu-tiny", "trainer.batch_size=32", "trainer.checkpoint_every=100000", f"text={TEXT}"]


@pytest.fixture(scope="module")
def heldout(report_phantoms):
    return report_controls.heldout(report_phantoms, TEXT, one_per_study=True)


@pytest.mark.slow
@pytest.mark.parametrize("encoder,decoder", [("resnet-tiny", "r2gen-tiny"), ("dve-tiny", "m2-tiny")])
def test_report_model_beats_the_most_frequent_and_the_shuffled_reports(report_phantoms, heldout, tmp_path, encoder, decoder):
    from cxr_irgen.report_models.factory import load_report_generator

    data = [f"data.root={report_phantoms}", *COMMON]
    run_command("train-label-encoder", [*data, f"encoder={encoder}", "trainer.max_steps=300", "trainer.lr=2e-3", f"hydra.run.dir={tmp_path / 'labels'}"])
    run_command("train-report-model", [*data, f"encoder={encoder}", f"encoder_args.checkpoint={tmp_path / 'labels'}", "+encoder_args.frozen=true",
                                       f"decoder={decoder}", "trainer.max_steps=300", "trainer.lr=1e-3", "evaluation.max_reports=0",
                                       f"hydra.run.dir={tmp_path / 'model'}"])
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["train_loss_last"] < 0.5 * metrics["train_loss_first"], metrics

    pixels, truth, most_frequent = heldout
    reports = load_report_generator(tmp_path / "model")(pixels, batch_size=64, num_beams=1)
    report_controls.assert_beats_controls(reports, truth, most_frequent)

    if decoder == "m2-tiny":  # M2Trans's second stage: SCST with the labeler reward runs and saves a loadable generator
        run_command("train-report-scst", [*data, f"model_run={tmp_path / 'model'}", "trainer.max_steps=5", "trainer.lr=1e-5", "trainer.batch_size=16",
                                          "max_length=40", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path / 'scst'}"])
        scst = json.loads((tmp_path / "scst" / "metrics.json").read_text())
        assert scst["steps"] == 5 and 0.0 <= scst["reward_greedy_first"] <= 1.0
        assert len(load_report_generator(tmp_path / "scst")(pixels[:4], num_beams=1)) == 4
