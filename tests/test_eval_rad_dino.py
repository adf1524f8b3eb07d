"""RAD-DINO features (eval.fid.features=rad_dino): a tiny random DINOv2 saved offline and loaded back by path.

The extractor must give the CLS token of the last hidden state of images preprocessed by the processor
saved beside the weights (its own resize/crop/mean/std); a missing folder or a non-DINOv2 model is one
line naming ``eval.fid.rad_dino``; ``evaluate`` refuses numbers from random RAD-DINO weights.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import refused
from omegaconf import OmegaConf

from cxr_irgen.cli import main
from cxr_irgen.errors import UserError
from cxr_irgen.eval.features import RAD_DINO_PREPROCESSOR, RadDinoFeatures, build_feature_extractor


@pytest.fixture(scope="module")
def tiny_rad_dino(tmp_path_factory):
    """A 2-layer DINOv2 (patch 14, 16-d) with a BitImageProcessor (shortest edge 42, crop 28, its own mean/std)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = tmp_path_factory.mktemp("rad-dino")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 42}, crop_size={"height": 28, "width": 28}, image_mean=[0.4] * 3, image_std=[0.3] * 3).save_pretrained(folder)
    return folder


def _extractor(source):
    return build_feature_extractor(OmegaConf.create({"features": "rad_dino", "rad_dino": None if source is None else str(source)}))


def test_cls_token_of_the_saved_model_with_its_saved_preprocessing(tiny_rad_dino):
    from transformers import AutoImageProcessor, AutoModel

    images = torch.rand(3, 1, 50, 40)
    extractor = _extractor(tiny_rad_dino)
    features = extractor(images)
    assert features.shape == (3, 16) and "rad-dino CLS (16-d, 28px, its preprocessor_config.json)" == extractor.name

    rgb = (images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    pixels = AutoImageProcessor.from_pretrained(str(tiny_rad_dino))(images=list(rgb), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 28, 28)
    model = AutoModel.from_pretrained(str(tiny_rad_dino)).eval()
    with torch.no_grad():
        out = model(pixel_values=pixels)
    torch.testing.assert_close(features, out.last_hidden_state[:, 0])
    torch.testing.assert_close(features, out.pooler_output)  # what CheXGenBench reads: the same layer-normed CLS token
    # the saved mean/std are used: the published RAD-DINO mean/std give different features
    published = {k: RAD_DINO_PREPROCESSOR[k] for k in ("image_mean", "image_std")}
    extractor.processor = type(extractor.processor)(size={"shortest_edge": 42}, crop_size={"height": 28, "width": 28}, **published)
    assert not torch.allclose(extractor(images), features)


def test_random_init_is_named_random_and_has_vit_b_width():
    extractor = RadDinoFeatures(None)
    assert extractor.name.startswith("rad-dino-random CLS (768-d, 518px") and extractor.model.config.patch_size == 14


def test_missing_folder_and_wrong_model_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"eval.fid.rad_dino=/nowhere/rad-dino is not a folder; fetch it with"):
        _extractor("/nowhere/rad-dino")
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=10)).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="holds a BertModel, not a DINOv2 model"):
        _extractor(tmp_path / "bert")
    with pytest.raises(UserError, match="cannot be loaded offline"):
        _extractor(tmp_path)  # a folder without config.json


def _generated(folder, phantom_root, n: int):
    from cxr_irgen.data.mimic import load_index

    folder.mkdir()
    table = load_index(phantom_root)
    for i, path in enumerate(table[table["view"].isin(["PA", "AP"])]["image_path"].tail(n)):
        shutil.copy(path, folder / f"{i:04d}.png")
        (folder / f"{i:04d}.json").write_text(json.dumps({"labels": "Cardiomegaly=1"}))
    return folder


def test_evaluate_refuses_random_rad_dino_and_scores_with_a_loaded_one(tiny_rad_dino, phantom_root, tmp_path, capsys, monkeypatch):
    gen = _generated(tmp_path / "gen", phantom_root, 8)
    args = ["evaluate", f"generated={gen}", f"data.root={phantom_root}", "eval.metrics=[fid,kid,prdc]", "eval.real.views=[PA,AP]",
            "eval.real.n=8", "eval.fid.features=rad_dino"]
    (tmp_path / "cwd").mkdir()
    line = refused([*args, "eval.fid.rad_dino=null", f"hydra.run.dir={tmp_path / 'cwd' / 'ev'}"], capsys, tmp_path / "cwd", monkeypatch)
    assert "RAD-DINO feature extractor with random weights" in line and "eval.fid.rad_dino=" in line and "eval.allow_random_weights=true" in line

    main([*args, f"eval.fid.rad_dino={tiny_rad_dino}", "eval.prdc.k=3", f"hydra.run.dir={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for metric in ("fid", "kid", "prdc"):
        assert metrics[metric]["feature_extractor"].startswith("rad-dino CLS (16-d, 28px") and "random_weights" not in metrics[metric]
    assert np.isfinite(metrics["fid"]["value"]) and metrics["fid"]["n_generated"] == 8 and metrics["kid"]["subset_size"] == 8
