"""train-report-model / train-report-encoder on phantoms (CPU, tiny configs): resume, strict checkpoints,
CNN-RNN-RNN stopping, generate through the interface, fine-grained labels on real IU X-ray reports."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cxr_irgen.cli import run_command

TINY = ["data.image_size=64", "trainer=cpu-tiny", "trainer.batch_size=16", "vocabulary.min_count=1", "evaluation.max_reports=0"]


def _train(root, out, *overrides):
    run_command("train-report-model", [f"data.root={root}", *TINY, f"hydra.run.dir={out}", *overrides])
    return out


def test_resumed_training_equals_uninterrupted(phantom_root, tmp_path):
    from safetensors.torch import load_file

    model = ["encoder=dve-tiny", "decoder=transformer-tiny", "trainer.checkpoint_every=3"]
    whole = _train(phantom_root, tmp_path / "whole", *model, "trainer.max_steps=6")
    _train(phantom_root, tmp_path / "parts", *model, "trainer.max_steps=3")
    parts = _train(phantom_root, tmp_path / "parts", *model, "trainer.max_steps=6", "trainer.resume=latest")
    a = load_file(str(whole / "report_model" / "model.safetensors"))
    b = load_file(str(parts / "report_model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert json.loads((parts / "metrics.json").read_text())["steps"] == 6

    # the run loads through the interface in `generate mode=reports`
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(phantom_root.rglob("*.jpg"))[:2]:
        (images / path.name).write_bytes(path.read_bytes())
    run_command("generate", ["mode=reports", f"images_dir={images}", f"language.checkpoint={whole}", "language.num_beams=2",
                             "language.max_length=12", f"hydra.run.dir={tmp_path / 'gen'}"])
    rows = [json.loads(line) for line in (tmp_path / "gen" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["report"], str) for r in rows)


def test_bad_names_and_mismatched_checkpoints_are_one_line_errors(phantom_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        _train(phantom_root, tmp_path / "bad", "encoder=resnet-9000", "decoder=transformer-tiny")
    assert exit_code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "encoder='resnet-9000': use one of" in err

    # an FVE encoder run (AUC-margin loss; patience 0 stops at the first validation, step 1 of at most 2) loaded into
    # the CVE encoder: strict loading names a key
    run_command("train-report-encoder", [f"data.root={phantom_root}", "encoder=fve-tiny", "trainer=cpu-tiny", "trainer.max_steps=2",
                                         "trainer.batch_size=16", "fine_labels.min_count=5", "loss=auc_margin", "selection.every=1",
                                         "selection.patience=0", f"hydra.run.dir={tmp_path / 'fve'}"])
    classes = (tmp_path / "fve" / "fine_classes.csv").read_text().splitlines()
    assert classes[0] == "class,count" and len(classes) > 3
    metrics = json.loads((tmp_path / "fve" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["stopped_early"] and metrics["selected_steps"] == {"coarse": 1, "fine": 1}
    assert (tmp_path / "fve" / "checkpoints" / "step-0000001" / "state.json").is_file()
    selected = [(tmp_path / "fve" / sub / "encoder.safetensors").read_bytes() for sub in ("best", "encoder")]
    assert selected[0] == selected[1]
    # resuming a run that stopped early trains no further and keeps the selection
    run_command("train-report-encoder", [f"data.root={phantom_root}", "encoder=fve-tiny", "trainer.resume=latest", f"hydra.run.dir={tmp_path / 'fve'}"])
    assert (tmp_path / "fve" / "encoder" / "encoder.safetensors").read_bytes() == selected[0]
    assert json.loads((tmp_path / "fve" / "metrics.json").read_text())["steps"] == 1
    with pytest.raises(SystemExit):
        _train(phantom_root, tmp_path / "mismatch", "encoder=cve-tiny", "decoder=transformer-tiny", f"encoder_args.checkpoint={tmp_path / 'fve'}")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not match the model" in err and re.search(r"missing key\(s\) \(first \['visual\.", err)
    assert not (tmp_path / "mismatch" / "report_model").exists()


@pytest.mark.slow
def test_cnn_rnn_rnn_learns_where_reports_stop(phantom_root, tmp_path):
    from cxr_irgen.report_models.factory import load_report_generator
    from cxr_irgen.report_models.vocabulary import words

    run = _train(phantom_root, tmp_path / "hier", "encoder=fve-tiny", "decoder=cnn_rnn_rnn-tiny", "text=impression",
                 "trainer.max_steps=150", "trainer.lr=3e-3", "evaluation.max_reports=40", "decoding.num_beams=1")
    frame = __import__("pandas").read_csv(run / "reports.csv")
    sentences = lambda text: max(1, words(text).count("."))  # noqa: E731
    generated = np.array([sentences(t) for t in frame["generated"]])
    reference = np.array([sentences(t) for t in frame["reference"]])
    max_sentences = load_report_generator(run).model.decoder.max_sentences
    assert (generated < max_sentences).all(), generated
    assert abs(generated.mean() - reference.mean()) < 1.0, (generated.mean(), reference.mean())
    assert len(set(generated)) > 1  # the stop decision depends on the image


def test_fine_grained_labels_are_deterministic_on_real_iu_xray_reports(tmp_path):
    from cxr_irgen.data.iu_xray import load_iu_reports
    from cxr_irgen.report_models.fine_labels import FineLabels

    reports = load_iu_reports().iloc[:1200]
    texts = (reports["findings"].fillna("") + " " + reports["impression"].fillna("")).tolist()
    first = FineLabels.build(texts, min_count=10)
    second = FineLabels.build(texts[::-1], min_count=10)
    assert first == second
    assert any("|" in c for c in first.classes) and list(first.counts) == sorted(first.counts, reverse=True)
    first.save(tmp_path)
    assert FineLabels.load(tmp_path) == first
    matrix = first.matrix(texts)
    assert np.array_equal(matrix, second.matrix(texts)) and matrix.sum(0).min() >= 10


def test_the_cxr_irgen_language_module_is_a_report_generator(phantom_root, tmp_path):
    import torch
    from test_language_prior import TINY_BART

    from cxr_irgen.language.generate import LanguageChain
    from cxr_irgen.report_models.factory import load_report_generator
    from cxr_irgen.report_models.language_adapter import CxrIrgenReportGenerator

    common = [f"data.root={phantom_root}", "data.image_size=64", *TINY_BART, "trainer=cpu-tiny", "trainer.max_steps=2",
              "trainer.batch_size=8", "evaluation.max_reports=0"]
    run_command("train-language", [*common, "stage=autoencoder", f"hydra.run.dir={tmp_path / 'ae'}"])
    run_command("train-language", [*common, "stage=prior", f"autoencoder={tmp_path / 'ae'}", "language/prior=vit-tiny", f"hydra.run.dir={tmp_path / 'prior'}"])

    generator = load_report_generator(tmp_path / "prior")
    assert isinstance(generator, CxrIrgenReportGenerator) and generator.image_size == generator.chain.representation.image_size
    images = torch.rand(3, 1, 64, 64)
    reports = generator(images, batch_size=2, max_length=8)
    assert reports == LanguageChain.from_run_dir(tmp_path / "prior")(images, max_length=8)
    assert generator(images, batch_size=2, seed=5, do_sample=True, max_length=8) == generator(images, batch_size=2, seed=5, do_sample=True, max_length=8)
    generator.save_pretrained(tmp_path / "exported")
    assert load_report_generator(tmp_path / "exported")(images, max_length=8) == reports
