"""A phantom set whose "generated" folder holds 8 validate phantoms and one exact copy of a training image, and an
untrained tiny DenseNet saved as a classifier run for features: the memorisation and privacy searches must find the copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import torch
from PIL import Image


def phantoms_with_a_copy(tmp_path: Path) -> tuple[Path, Path, Path, str, pd.DataFrame]:
    """``(phantom root, generated folder, features run dir, path of the copied training image, index table)``."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.phantoms import make_phantoms
    from cxr_irgen.eval.classifier import Classifier, build_densenet

    root = make_phantoms(tmp_path / "phantoms", n=90, seed=0, size=48)
    arch = {"growth_rate": 8, "block_config": [2, 2], "num_init_features": 8}
    torch.manual_seed(0)  # an untrained tiny DenseNet as the feature extractor: these tests are about the mechanics, not values
    Classifier(build_densenet(arch, 14), ["No Finding"] * 14, 48, "tiny", arch).save_pretrained(tmp_path / "features")
    table = load_index(root)
    gen = tmp_path / "gen"
    gen.mkdir()
    for i, path in enumerate(table[table["split"] == "validate"]["image_path"].head(8)):
        Image.open(path).convert("L").save(gen / f"{i:02d}.png")
    copied = table[table["split"] == "train"]["image_path"].iloc[3]
    shutil.copy(copied, gen / "copy.jpg")
    return root, gen, tmp_path / "features", copied, table
