"""pyproject.toml floors are the versions whose APIs the code uses (issue 10 item 10)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# package: (first release with what the code needs, what that is); checked by reading the released wheels
NEEDED = {
    "transformers": ("5.9", "ViTModel.layers / ViTLayer returning a tensor (language/prior.py)"),
    "diffusers": ("0.33", "ModelMixin._gradient_checkpointing_func (vision/uvit.py)"),
}


def _floors() -> dict[str, Version]:
    text = PYPROJECT.read_text()
    return {name: Version(floor) for name, floor in re.findall(r'"([A-Za-z0-9_\-]+)>=([0-9.]+)"', text)}


@pytest.mark.parametrize("package", sorted(NEEDED))
def test_floor_is_the_first_version_with_the_api_the_code_uses(package):
    needed, why = NEEDED[package]
    assert _floors()[package] >= Version(needed), f"{package} floor below {needed}: {why}"
    assert Version(version(package)) >= _floors()[package]


def test_the_apis_behind_the_floors_exist():
    from transformers import ViTConfig, ViTModel

    from cxr_irgen.vision.uvit import UViT

    vit = ViTModel(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=8, patch_size=4))
    assert hasattr(vit, "layers")
    uvit = UViT(sample_size=4, patch_size=2, in_channels=4, width=8, depth=2, num_heads=2, cond_dim=8)
    uvit.enable_gradient_checkpointing()
    assert callable(uvit._gradient_checkpointing_func)
