"""Encoders' ``pretrained=`` / ``checkpoint=`` from a local file, a folder or a hub id in an offline Hugging Face
cache (a temporary cache laid out like the hub's), always loaded strictly."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.encoders import build_encoder, build_timm, model_config

DVE_KWARGS = OmegaConf.to_container(model_config("encoder", "dve-tiny").kwargs)


def _published_densenet() -> dict[str, torch.Tensor]:
    """A timm DenseNet of dve-tiny's size with a 5-class head, as a published checkpoint holds it."""
    return {k: v.clone() for k, v in build_timm("densenet121", DVE_KWARGS, num_classes=5).state_dict().items()}


def _fake_hub(cache, repo: str, files: dict[str, object]) -> None:
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    for name, state in files.items():
        save_file(state, str(snapshot / name)) if name.endswith(".safetensors") else torch.save(state, snapshot / name)


def test_pretrained_from_a_local_file_or_folder_loads_strictly(tmp_path):
    published = _published_densenet()
    save_file(published, str(tmp_path / "model.safetensors"))
    for source in (tmp_path / "model.safetensors", tmp_path):
        encoder = build_encoder("dve-tiny", {"pretrained": str(source)})
        own = encoder.backbone.state_dict()
        assert all(torch.equal(own[k], v) for k, v in published.items() if not k.startswith("classifier."))

    # FVE: the same backbone weights initialise both classifiers
    convnext = model_config("encoder", "fve-tiny")
    save_file(build_timm(convnext.model_name, OmegaConf.to_container(convnext.kwargs), num_classes=3).state_dict(), str(tmp_path / "convnext.safetensors"))
    fve = build_encoder("fve-tiny", {"pretrained": str(tmp_path / "convnext.safetensors")})
    assert all(torch.equal(v, fve.fine.state_dict()[k]) for k, v in fve.coarse.state_dict().items())

    key = next(k for k in published if k.startswith("features."))
    save_file({k: v for k, v in published.items() if k != key}, str(tmp_path / "short.safetensors"))
    with pytest.raises(UserError, match=r"1 missing key\(s\) \(first \['" + key.replace(".", r"\.")):
        build_encoder("dve-tiny", {"pretrained": str(tmp_path / "short.safetensors")})


def test_pretrained_and_checkpoint_from_an_offline_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    published = _published_densenet()
    clip_encoder = build_encoder("cve-tiny")
    whole_clip = {f"visual.{k}": v.clone() + 1 for k, v in clip_encoder.visual.state_dict().items()}
    whole_clip["text_projection"] = torch.zeros(4, 4)
    _fake_hub(cache, "org/dve-tiny", {"model.safetensors": published})
    _fake_hub(cache, "org/cve-tiny", {"open_clip_pytorch_model.bin": whole_clip})
    _fake_hub(cache, "org/cve-encoder", {"encoder.safetensors": {f"visual.{k}": v.clone() + 2 for k, v in clip_encoder.visual.state_dict().items()}})

    dve = build_encoder("dve-tiny", {"pretrained": "hf-hub:org/dve-tiny"})
    assert torch.equal(dve.backbone.state_dict()[next(iter(published))], next(iter(published.values())))
    cve = build_encoder("cve-tiny", {"pretrained": "org/cve-tiny"})  # a whole CLIP: its visual.* keys
    key = next(iter(whole_clip))
    assert torch.equal(cve.visual.state_dict()[key[len("visual."):]], whole_clip[key])
    cve = build_encoder("cve-tiny", {"checkpoint": "hf-hub:org/cve-encoder"})
    assert torch.allclose(cve.visual.state_dict()[key[len("visual."):]], whole_clip[key] + 1)

    with pytest.raises(UserError) as err:
        build_encoder("dve-tiny", {"pretrained": "hf-hub:org/absent"})
    message = str(err.value)
    assert "\n" not in message and "org/absent" in message and str(cache) in message and "pretrained=/path/to/model.safetensors" in message
