"""CXR-RePaiR generator: k and Select decoding, save/load round trip through the shared interface, bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.factory import load_report_generator
from cxr_irgen.report_models.repair import RepairGenerator, RetrievalClip
from cxr_irgen.report_models.retrieval import CorpusIndex

IMPRESSIONS = ["No acute cardiopulmonary process.", "Moderate cardiomegaly.", "Small left pleural effusion. Mild pulmonary edema."]


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    cfg = OmegaConf.to_container(report_model_config("clip", "vit-tiny"))
    cfg.pop("pretrained")
    image_size = int(cfg.pop("image_size"))
    model = RetrievalClip(cfg, image_size)
    index = CorpusIndex.build(IMPRESSIONS, model.embed_texts, level="sentence")
    return RepairGenerator(model, index, cfg, {"k": 2, "select": False})


def test_reports_join_the_nearest_corpus_sentences(generator):
    images = torch.rand(3, 1, 64, 64)
    embeddings = generator.model(images)[:, 0].detach().numpy()
    scores = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)) @ np.asarray(generator.index.embeddings).T
    expected = [" ".join(generator.index.texts[i] for i in np.argsort(-row)[:2]) for row in scores]
    assert generator(images) == expected
    assert generator(images, k=1) == [e.split(". ")[0] + ("." if not e.split(". ")[0].endswith(".") else "") for e in expected]
    selected = generator(images, select=True)
    assert all(s == t or s.count(".") >= 4 for s, t in zip(selected, generator(images, k=1)))  # k=1 or all 4 sentences


def test_repair_round_trips_through_the_interface(generator, tmp_path):
    generator.save_pretrained(tmp_path / "repair")
    loaded = load_report_generator(tmp_path / "repair")
    assert isinstance(loaded, RepairGenerator) and loaded.image_size == 64
    images = torch.rand(2, 1, 64, 64)
    assert loaded(images, select=True) == generator(images, select=True)
    assert loaded(images, num_beams=4, max_length=50) == generator(images)  # beam options do not apply


def test_bad_decoding_options_are_one_line_errors(generator):
    images = torch.rand(1, 1, 64, 64)
    with pytest.raises(UserError, match="k=7"):
        generator(images, k=7)
    with pytest.raises(UserError, match="not sampled"):
        generator(images, do_sample=True)
    with pytest.raises(UserError, match="unknown retrieval option"):
        generator(images, temperature=1.0)
