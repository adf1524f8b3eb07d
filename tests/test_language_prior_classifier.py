"""The prior's ``classifier`` input: a frozen trained DenseNet's pooled features (beyond the paper, docs/prior-input-classifier.md).

Unit: the representation is frozen (BatchNorm stays in eval mode), the prior run records the encoder's run dir and the
SHA-1 of its weights, and a prior whose encoder is missing or changed refuses to load with one line.

Its learning test is in test_language_held_out.py (it shares that module's trained language module).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.cli import run_command
from cxr_irgen.errors import UserError
from cxr_irgen.language.representation import build_image_representation
from cxr_irgen.vision.densenet import xrv_preprocess

PRIOR_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "language" / "prior" / "vit-tiny.yaml"


def save_random_classifier(path: Path, seed: int = 0) -> Path:
    """A random tiny DenseNet saved as a train-classifier run would save it (classifier.json + model.safetensors)."""
    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.eval.classifier import Classifier, build_densenet

    arch = {"growth_rate": 8, "block_config": [2, 2, 2], "num_init_features": 16}
    torch.manual_seed(seed)
    Classifier(build_densenet(arch, len(CHEXPERT_LABELS)), list(CHEXPERT_LABELS), 64, "random", arch).save_pretrained(path)
    return path


def classifier_prior_cfg(source) -> OmegaConf:
    return OmegaConf.merge(OmegaConf.load(PRIOR_CONFIG), {"input": "classifier", "classifier": {"source": str(source)}})


def test_classifier_representation_is_frozen_pooled_features(tmp_path):
    representation = build_image_representation(classifier_prior_cfg(save_random_classifier(tmp_path / "clf"))).train()
    encoder = representation.encoder
    assert not representation.training and not encoder.model.training and not any(p.requires_grad for p in representation.parameters())
    assert representation.input_shape == (encoder.embed_dim,) and representation.image_size == 64  # the classifier's own resolution
    images = torch.rand(3, 1, 64, 64)
    features = representation(images)
    assert features.shape == (3, encoder.embed_dim) and not features.requires_grad
    with torch.no_grad():  # the pooled features are what the classifier's linear head reads
        assert torch.allclose(encoder.model.classifier(features), encoder.model(xrv_preprocess(images, 64)), atol=1e-5)
    assert torch.equal(representation(images), features)  # BatchNorm running statistics, not batch statistics


def test_classifier_input_without_source_is_one_line_error():
    with pytest.raises(UserError, match="prior.classifier.source"):
        build_image_representation(classifier_prior_cfg(""))
    with pytest.raises(UserError, match="not a train-classifier run"):
        build_image_representation(classifier_prior_cfg("/nonexistent/run"))


def test_prior_run_records_the_encoder_and_refuses_a_changed_one(phantom_root, tmp_path):
    """A few steps only: what is checked is the bookkeeping (what the run dir records and how loading reacts)."""
    from cxr_irgen.language.generate import GENERATOR_FILE, LanguageChain

    clf = save_random_classifier(tmp_path / "clf")
    tiny_bart = ["language/model=bart-tiny", "model.vocab_size=300", "model.config.d_model=32", "model.config.encoder_layers=1",
                 "model.config.decoder_layers=1", "model.config.encoder_ffn_dim=64", "model.config.decoder_ffn_dim=64"]
    common = [f"data.root={phantom_root}", "text=impression", "data.image_size=64", *tiny_bart, "language/prior=vit-tiny", "trainer=cpu-tiny",
              "trainer.batch_size=16", "trainer.checkpoint_every=100000", "evaluation.max_reports=0"]
    run_command("train-language", [*common, "stage=autoencoder", "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'ae'}"])
    run_command("train-language", [*common, "stage=prior", f"autoencoder={tmp_path / 'ae'}", "prior.input=classifier",
                                   f"prior.classifier.source={clf}", "trainer.max_steps=2", f"hydra.run.dir={tmp_path / 'prior'}"])
    recorded = json.loads((tmp_path / "prior" / "prior" / GENERATOR_FILE).read_text())["representation"]
    assert recorded["input"] == "classifier" and recorded["classifier"]["source"] == str(clf.resolve()) and len(recorded["classifier"]["sha1"]) == 40

    generator = LanguageChain.from_run_dir(tmp_path / "prior")
    assert generator.representation.kind == "classifier" and generator.prior.input_shape == generator.representation.input_shape
    assert len(generator(torch.rand(2, 1, 64, 64), max_length=8)) == 2

    save_random_classifier(clf, seed=1)  # retrained in place: the prior no longer reads the features it was trained on
    with pytest.raises(UserError, match="changed since the prior was trained"):
        LanguageChain.from_run_dir(tmp_path / "prior")


def test_train_prior_with_classifier_input_and_no_source_fails_before_training(phantom_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_command("train-language", ["stage=prior", f"autoencoder={tmp_path}", f"data.root={phantom_root}", "language/prior=vit-tiny",
                                       "prior.input=classifier", f"hydra.run.dir={tmp_path / 'prior'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "prior.classifier.source" in err[0]
    assert not (tmp_path / "prior").exists()
