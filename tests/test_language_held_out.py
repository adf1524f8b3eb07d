"""The demo's language module on held-out real phantoms, CPU: stage 1 → stage 2 → reports, labelled by the eval labeler.

One module fixture trains it once (shared by every test here, so a parallel run keeps them on one worker): the
classifier for the ``classifier`` input, the stage-1 autoencoder, three priors; each test reads the reports for the
held-out (validate + test) phantoms, scored by micro F1 of positive mentions of the 14 observations against the
images' labels.

- The 16 px ``image`` prior must beat always writing the most frequent training report, and the same reports shuffled
  across the images (so the reports depend on the image they were generated from, not only on frequent findings).
  Stage 1 uses word dropout (``model.word_dropout=0.3``): without it the tiny decoder reads little from the bottleneck,
  the embedding mostly encodes wording (on phantoms the positive labels, what the pixels show, explain only ~12% of its
  variance), and the prior collapses to one report for every image.
- The ``classifier`` input (a 200-step tiny DenseNet's features, docs/prior-input-classifier.md) must beat the 16 px
  pixels and the most frequent report.
- Label tokens (``prior.labels=true``, beyond the paper), given each image's own label row, must beat the prior without
  them and themselves given another image's row (shuffled: so the prior reads the labels); given none (label dropout in
  training) they must still write from the image, above the most frequent report.
"""

from __future__ import annotations

import numpy as np
import pytest
import report_controls
import torch

from cxr_irgen.cli import run_command
from cxr_irgen.language.generate import LanguageChain
from cxr_irgen.text.labeler import label_reports

TINY_DENSENET = ["classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16", "resolution=64"]


@pytest.fixture(scope="module")
def held_out_reports(report_phantoms, tmp_path_factory) -> dict:
    """The demo's language module trained once on ``report_phantoms`` (tiny BART on findings, word dropout 0.3, 600 steps;
    tiny ViT priors, 1,500 steps) with three priors: 16 px pixels (``image``), a 200-step tiny DenseNet's features
    (``classifier``) and 16 px pixels with label tokens (``labels``). Returns each prior's reports for the held-out
    (validate + test) phantoms (3 beams, no 4-gram twice; ``labels`` given the images' own label rows, and as controls
    ``labels_shuffled`` given another image's and ``labels_none`` given none), their label rows ``truth`` (N, 14) and the
    ``most_frequent`` training report."""
    runs = tmp_path_factory.mktemp("held-out-reports")
    data = [f"data.root={report_phantoms}", "seed=0"]
    language = [*data, "data.image_size=64", "language/model=bart-tiny", "language/prior=vit-tiny", "trainer=cpu-tiny", "trainer.checkpoint_every=100000",
                "evaluation.max_reports=0"]
    run_command("train-classifier", [*data, *TINY_DENSENET, "trainer=cpu-tiny", "trainer.max_steps=200", "trainer.checkpoint_every=100000",
                                     "eval_split=null", f"hydra.run.dir={runs / 'clf'}"])
    run_command("train-language", [*language, "stage=autoencoder", "model.word_dropout=0.3", "trainer.max_steps=600", f"hydra.run.dir={runs / 'ae'}"])
    images, truth, most_frequent = report_controls.heldout(report_phantoms, "findings", one_per_study=True)
    decode = {"batch_size": 64, "num_beams": 3, "no_repeat_ngram_size": 4}
    shuffled = truth[np.random.default_rng(0).permutation(len(truth))]
    reports = {}
    for name, extra in (("image", []), ("classifier", ["prior.input=classifier", f"prior.classifier.source={runs / 'clf'}"]), ("labels", ["prior.labels=true"])):
        run_command("train-language", [*language, "stage=prior", f"autoencoder={runs / 'ae'}", *extra, "trainer.max_steps=1500", "trainer.lr=1e-3",
                                       f"hydra.run.dir={runs / name}"])
        chain = LanguageChain.from_run_dir(runs / name)
        reports[name] = chain(images, labels=torch.as_tensor(truth, dtype=torch.float32) if chain.reads_labels else None, **decode)
    reports["labels_shuffled"] = chain(images, labels=torch.as_tensor(shuffled, dtype=torch.float32), **decode)
    reports["labels_none"] = chain(images, **decode)
    return {"reports": reports, "truth": truth, "most_frequent": most_frequent}


@pytest.mark.slow
def test_reports_from_heldout_phantoms_beat_the_most_frequent_report(held_out_reports):
    report_controls.assert_beats_controls(held_out_reports["reports"]["image"], held_out_reports["truth"], held_out_reports["most_frequent"])


@pytest.mark.slow
def test_classifier_input_beats_16px_pixels_and_the_most_frequent_report(held_out_reports):
    """The demo's language module (tiny BART on findings, word dropout 0.3) with a 200-step tiny DenseNet at 64 px."""
    truth = held_out_reports["truth"]
    f1 = {name: report_controls.positive_f1(label_reports(reports), truth) for name, reports in held_out_reports["reports"].items()}
    f1["most_frequent"] = report_controls.positive_f1(label_reports([held_out_reports["most_frequent"]] * len(truth)), truth)
    print(f"report-label F1 on {len(truth)} held-out phantoms: {f1}")
    # measured 2026-12-07 on 132 held-out phantoms: classifier 0.667, image 0.610 at one thread; 0.665, 0.637 at two
    # (the runs differ in float order); most frequent 0.317
    assert f1["classifier"] > f1["image"] and f1["classifier"] > f1["most_frequent"] + 0.3, f1


@pytest.mark.slow
def test_label_tokens_make_reports_follow_the_labels(held_out_reports):
    truth, reports = held_out_reports["truth"], held_out_reports["reports"]
    f1 = {name: report_controls.positive_f1(label_reports(reports[name]), truth) for name in ("labels", "labels_shuffled", "labels_none", "image")}
    f1["most_frequent"] = report_controls.positive_f1(label_reports([held_out_reports["most_frequent"]] * len(truth)), truth)
    print(f"report-label F1 on {len(truth)} held-out phantoms: {f1}")
    assert f1["labels"] > f1["image"] + 0.05 and f1["labels"] > f1["labels_shuffled"] + 0.1, f1
    assert f1["labels_none"] > f1["most_frequent"] + 0.05, f1
