"""Encoders' ``pretrained=`` / ``checkpoint=`` from a local file, a folder or a hub id in an offline Hugging Face
cache (a temporary cache laid out like the hub's), always loaded strictly."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.encoders import BACKBONE_FILES, ENCODER_FILE, backbone_state, build_report_encoder, build_timm, encoder_weights_path
from cxr_irgen.report_models.weights import load_strict, read_weights, resolve_weights


def _timm_with_head(name: str, num_classes: int) -> dict[str, torch.Tensor]:
    """A timm backbone of encoder ``name``'s size with a classifier head, as a published checkpoint holds it."""
    cfg = report_model_config("encoder", name)
    return dict(build_timm(cfg.model_name, OmegaConf.to_container(cfg.kwargs), num_classes=num_classes).state_dict())


def _fake_hub(cache, repo: str, files: dict[str, dict]) -> None:
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    for name, state in files.items():
        save_file(state, str(snapshot / name)) if name.endswith(".safetensors") else torch.save(state, snapshot / name)


def test_pretrained_and_checkpoint_from_files_folders_and_an_offline_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    densenet = _timm_with_head("dve-tiny", 5)
    _fake_hub(cache, "org/dve-tiny", {"model.safetensors": densenet})

    # a timm checkpoint by hub id: every key but the classifier head of the headless backbone
    dve = build_report_encoder("dve-tiny", pretrained="hf-hub:org/dve-tiny")
    own = dve.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in densenet.items() if not k.startswith("classifier."))
    # strict: a checkpoint without one of the backbone's keys is an error naming it
    key = next(k for k in densenet if k.startswith("features."))
    with pytest.raises(UserError, match=r"1 missing key\(s\) \(first \['" + key.replace(".", r"\.")):
        load_strict(dve.backbone, backbone_state(dve.backbone, {k: v for k, v in densenet.items() if k != key}), "short")

    # FVE: one local file initialises both classifiers; a folder resolves to the file it holds
    save_file(_timm_with_head("fve-tiny", 3), str(tmp_path / "model.safetensors"))
    assert resolve_weights(tmp_path, BACKBONE_FILES) == tmp_path / "model.safetensors"
    fve = build_report_encoder("fve-tiny", pretrained=str(tmp_path))
    assert all(torch.equal(v, fve.fine.state_dict()[k]) for k, v in fve.coarse.state_dict().items())

    # a whole CLIP checkpoint (torch format): its visual.* keys; an encoder checkpoint by hub id
    cve = build_report_encoder("cve-tiny")
    whole_clip = {f"visual.{k}": v + 1 for k, v in cve.visual.state_dict().items()} | {"text_projection": torch.zeros(4, 4)}
    _fake_hub(cache, "org/cve-tiny", {"open_clip_pytorch_model.bin": whole_clip, ENCODER_FILE: {"visual.x": torch.zeros(1)}})
    load_strict(cve.visual, backbone_state(cve.visual, read_weights(resolve_weights("org/cve-tiny", BACKBONE_FILES))), "org/cve-tiny")
    assert all(torch.equal(v, whole_clip[f"visual.{k}"]) for k, v in cve.visual.state_dict().items())
    assert encoder_weights_path("hf-hub:org/cve-tiny").parent == encoder_weights_path(tmp_path / "hub" / "models--org--cve-tiny" / "snapshots" / "0123abcd").parent

    # not in the cache: one line naming the id, the cache and the local-path alternative, before any model is built
    with pytest.raises(UserError) as err:
        build_report_encoder("dve", pretrained="hf-hub:org/absent")
    message = str(err.value)
    assert "\n" not in message and "org/absent" in message and str(cache) in message and "pretrained=/path/to/model.safetensors" in message
