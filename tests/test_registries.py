"""Every model family lists its models, and every listed name builds from its YAML (tiny overrides where the paper size is slow)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.errors import UserError
from cxr_irgen.report_models import build_report_decoder, build_report_encoder, create_report_model, list_report_decoders, list_report_encoders, list_report_models, load_report_generator
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.vocabulary import Vocabulary
from cxr_irgen.vision import build_vision_model, list_vision_models
from cxr_irgen.vision.backbones import VISION_BACKBONES
from cxr_irgen.vision.model import vision_model_config

REPORTS = ["the heart is normal .", "small left pleural effusion . no pneumothorax ."]
WEIGHT_KEYS = ("backbone", "text_encoder", "image_encoder", "vae")
PAPER_WIDTH = 256  # widest backbone block of a test-size config


def named_weights(cfg) -> list[str]:
    """The pretrained weights a vision/model config names (hub ids or folders)."""
    return sorted({str(cfg[part][key]) for part in WEIGHT_KEYS for key in ("pretrained", "checkpoint") if cfg[part].get(key)})


@pytest.mark.parametrize("name", list_vision_models())
def test_every_vision_model_builds_from_its_yaml(name):
    cfg = vision_model_config(name)
    assert cfg.backbone.kind in VISION_BACKBONES
    weights = named_weights(cfg)
    if weights:
        pytest.skip(f"{name} needs the pretrained weights {', '.join(weights)} (scripts/fetch_weights.py)")
    width = max(cfg.backbone.config.get("block_out_channels") or [cfg.backbone.config.width])
    if width > PAPER_WIDTH:
        pytest.skip(f"{name} is paper size (random init, backbone width {width}): minutes on a CPU; unet-tiny takes its code path")
    cfg, encoders, model = build_vision_model(name)
    features = encoders.encode_conditions(["Cardiomegaly.", ""], torch.rand(2, 1, cfg.image_size, cfg.image_size))
    latents = torch.randn(2, *encoders.vae.encode(torch.rand(1, 1, cfg.image_size, cfg.image_size)).shape[1:])
    assert model(latents, torch.tensor([1, 500]), features).shape == latents.shape


def test_vision_overrides_reach_the_config_and_unknown_names_list_the_known():
    cfg, encoders, _ = build_vision_model("unet-tiny", conditioning={"mode": "text"})
    assert cfg.conditioning.mode == "text" and encoders.image_encoder is None
    with pytest.raises(UserError, match="use one of .*unet-tiny"):
        build_vision_model("base")


def encoder_overrides(name: str) -> dict:
    """Paper-size encoders at 64 px (CCVE's attention pool needs CLIP's input size: one cluster instead)."""
    if name.endswith("-tiny"):
        return {}
    return {"clusters": 1} if report_model_config("encoder", name).builder == "cluster_clip" else {"image_size": 64}


@pytest.mark.parametrize("name", list_report_encoders())
def test_every_report_encoder_builds_from_its_yaml(name):
    encoder = build_report_encoder(name, **encoder_overrides(name)).eval()
    with torch.no_grad():
        tokens = encoder(torch.rand(2, 1, 48, 48))
    assert tokens.shape == (2, encoder.num_tokens, encoder.width) and encoder.num_tokens > 0


@pytest.mark.parametrize("name", list_report_decoders())
def test_every_report_decoder_builds_from_its_yaml(name):
    vocab = Vocabulary.build(REPORTS, max_words=12)
    decoder = build_report_decoder(name, vocab_size=len(vocab), max_positions=vocab.max_words + 2, sentence_end=vocab.sentence_end)
    memory = torch.randn(2, 3, decoder.d_model)
    loss = decoder.loss(memory, vocab.encode(REPORTS))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_a_decoder_that_needs_the_sentence_end_says_so():
    with pytest.raises(UserError, match="sentence_end"):
        build_report_decoder("cnn_rnn_rnn-tiny", vocab_size=20, max_positions=10)


def encoder_decoder(tmp_path):
    return create_report_model(encoder="resnet-tiny", decoder="transformer-tiny", vocab=REPORTS, decoding={"num_beams": 1, "max_length": 6})


def repair(tmp_path):
    from cxr_irgen.report_models.repair import RepairGenerator, RetrievalClip
    from cxr_irgen.report_models.retrieval import CorpusIndex

    cfg = OmegaConf.to_container(report_model_config("clip", "vit-tiny"))
    cfg.pop("pretrained")
    model = RetrievalClip(cfg, int(cfg.pop("image_size")))
    return RepairGenerator(model, CorpusIndex.build(REPORTS, model.embed_texts, level="sentence"), cfg, {"k": 1})


MAKERS = {"encoder-decoder": encoder_decoder, "repair": repair}
TRAINED_ONLY = {"cxr-irgen-language": "a trained stage-1 autoencoder and stage-2 prior run (test_report_models_train.py builds and loads one)"}


@pytest.mark.parametrize("kind", list_report_models())
def test_every_report_generator_kind_builds_saves_and_loads_by_its_recorded_name(kind, tmp_path):
    if kind in TRAINED_ONLY:
        pytest.skip(f"{kind} needs {TRAINED_ONLY[kind]}")
    generator = MAKERS[kind](tmp_path)
    generator.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "report_generator.json").read_text())["kind"] == kind
    images = torch.rand(2, 1, 64, 64)
    reports = load_report_generator(tmp_path / "saved")(images)
    assert reports == generator(images) and all(isinstance(r, str) for r in reports)


def test_the_old_name_of_the_language_kind_still_loads(tmp_path):
    from cxr_irgen.report_models.interface import REPORT_GENERATORS
    from cxr_irgen.report_models.language_adapter import CxrIrgenReportGenerator

    assert REPORT_GENERATORS.get("cxr-irgen") is REPORT_GENERATORS.get("cxr-irgen-language") is CxrIrgenReportGenerator
    assert "cxr-irgen" not in list_report_models()


def unknown_report_generator(tmp_path):
    (tmp_path / "report_generator.json").write_text(json.dumps({"kind": "no-such-kind"}))
    return load_report_generator(tmp_path)


UNKNOWN = {
    "vision model": (lambda tmp_path: build_vision_model("no-such-model"), "unet-tiny"),
    "report encoder": (lambda tmp_path: build_report_encoder("no-such-encoder"), "resnet-tiny"),
    "report decoder": (lambda tmp_path: build_report_decoder("no-such-decoder", vocab_size=20, max_positions=10), "transformer-tiny"),
    "report generator": (unknown_report_generator, "encoder-decoder"),
}


@pytest.mark.parametrize("family", sorted(UNKNOWN))
def test_an_unknown_name_is_a_user_error_naming_the_known_ones(family, tmp_path):
    build, known = UNKNOWN[family]
    with pytest.raises(UserError, match=f"no-such-.*{known}"):
        build(tmp_path)
