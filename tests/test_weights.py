"""Offline weights: the tree scripts/fetch_weights.py writes (from tiny random models), check-weights, weights.root.

The network download is not exercised; everything after it (install, XRV conversion, manifest) is the
script's own code, and the check is the one ``cxr-irgen check-weights`` and the commands run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from cxr_irgen.cli import main
from cxr_irgen.weights import MANIFEST, PARTS, check_tree, ready_recipes

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_weights", REPO / "scripts" / "fetch_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch = _load_script()
INCEPTION = Path(PARTS["inception-fid"].path).name


def _stage_sd(folder: Path, text_width: int = 16) -> None:
    """Tiny SD v1.4 layout: unet (cross-attention = text width), vae (4 latent channels), CLIP text encoder, CLIP BPE tokenizer."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from cxr_irgen.vision.encoders import openclip_tokenizer_dir

    UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=4, norm_num_groups=4,
        cross_attention_dim=text_width,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, layers_per_block=1, latent_channels=4).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=text_width, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=text_width)).save_pretrained(folder / "text_encoder")
    shutil.copytree(openclip_tokenizer_dir(), folder / "tokenizer")  # vocab.json, merges.txt, tokenizer_config.json as on the hub
    (folder / "safety_checker").mkdir()
    (folder / "safety_checker" / "model.safetensors").write_bytes(b"not wanted")


def _stage_clip(folder: Path, projection_dim: int = 16) -> None:
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=projection_dim)).save_pretrained(folder)


def _stage_bart(folder: Path) -> None:
    from transformers import BartConfig, BartForConditionalGeneration

    from cxr_irgen.language.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["the heart is normal in size", "no pleural effusion", "mild cardiomegaly"] * 20, vocab_size=300)
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(str(folder))


def _stage_rad_dino(folder: Path, crop: int = 28) -> None:
    """Tiny DINOv2 (patch 14) with a BitImageProcessor config, the files microsoft/rad-dino holds."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop}).save_pretrained(folder)


def _install(root: Path, name: str, staged: Path) -> None:
    fetch.record(root, PARTS[name], fetch.install(PARTS[name], staged, root))


@pytest.fixture(scope="module")
def xrv_release(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """torchxrayvision's release format: the whole DenseNet-121 pickled (random weights here), and that model."""
    import torchxrayvision as xrv

    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()
    path = tmp_path_factory.mktemp("release") / "xrv.pt"
    torch.save(model, path)
    return path, model


@pytest.fixture(scope="module")
def tree(tmp_path_factory, xrv_release) -> Path:
    """A paper-unet + eval-only tree written by the script's install/convert/record code from tiny random models."""
    staging, root = tmp_path_factory.mktemp("staging"), tmp_path_factory.mktemp("models")
    for name, stage in (("stable-diffusion-v1-4", _stage_sd), ("clip-vit-large-patch14", _stage_clip), ("bart-base", _stage_bart), ("rad-dino", _stage_rad_dino)):
        stage(staging / name)
        _install(root, name, staging / name)
    shutil.copy(xrv_release[0], staging / "xrv.pt")
    _install(root, "xrv-densenet121-res224-all", staging / "xrv.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, staging / INCEPTION)
    _install(root, "inception-fid", staging / INCEPTION)
    return root


@pytest.fixture
def tree_copy(tree, tmp_path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "models"))


def _lines(problems: dict) -> list[str]:
    return [line for lines in problems.values() for line in lines]


def test_script_tree_passes_check_weights(tree, tmp_path, capsys):
    manifest = json.loads((tree / MANIFEST).read_text())["files"]
    assert {e["part"] for e in manifest} == {"stable-diffusion-v1-4", "clip-vit-large-patch14", "bart-base", "xrv-densenet121-res224-all", "inception-fid", "rad-dino"}
    for entry in manifest:
        assert set(entry) == {"file", "sha256", "size", "source", "licence", "part"}
        data = (tree / entry["file"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert not any("safety_checker" in e["file"] for e in manifest)  # only the files the part needs are installed

    main(["check-weights", f"weights.root={tree}", f"output_root={tmp_path}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "ready recipes: paper-unet, eval-only"
    assert len(out) == 2, out  # no problem lines, only the summary


@pytest.mark.parametrize("damage, expected", [
    ("truncate", r"^truncated: bart-base/model\.safetensors has \d+ of \d+ bytes"),
    ("flip", r"^wrong hash: bart-base/model\.safetensors"),
    ("remove", r"^missing: bart-base/ \(bart-base; \d+ files\)"),
])
def test_damaged_tree_one_line_each(tree_copy, damage, expected):
    path = tree_copy / "bart-base" / "model.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        shutil.rmtree(tree_copy / "bart-base")
    problems = check_tree(tree_copy, ["stable-diffusion-v1-4", "clip-vit-large-patch14", "bart-base", "xrv-densenet121-res224-all", "inception-fid", "rad-dino"])
    lines = _lines(problems)
    assert len(lines) == 1 and re.match(expected, lines[0]), lines
    assert ready_recipes(problems) == ["eval-only"]


def test_check_weights_exit_status_and_config_mismatch(tree_copy, tmp_path, capsys):
    """A CLIP whose projection does not fit the SD text width is caught from its config; exit status 1."""
    shutil.rmtree(tree_copy / "clip-vit-large-patch14")
    _stage_clip(tmp_path / "clip8", projection_dim=8)
    _install(tree_copy, "clip-vit-large-patch14", tmp_path / "clip8")
    with pytest.raises(SystemExit) as exit_:
        main(["check-weights", f"weights.root={tree_copy}", f"output_root={tmp_path / 'out'}"])
    assert exit_.value.code == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("config: clip-vit-large-patch14 projected image embedding is 8-d but the SD text encoder is 16-d")
    assert out[-1] == "ready recipes: eval-only" and len(out) == 3


def test_commands_check_their_parts_before_loading(tree_copy, tmp_path, capsys):
    """train-vision with a damaged SD unet stops with one line and status 2, before any run dir exists."""
    unet = tree_copy / "stable-diffusion-v1-4" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:100])
    out = tmp_path / "outputs"
    with pytest.raises(SystemExit) as exit_:
        main(["train-vision", f"weights.root={tree_copy}", f"output_root={out}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated: stable-diffusion-v1-4/unet/diffusion_pytorch_model.safetensors" in err[0]
    assert not out.exists()


def test_check_weights_without_manifest_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check-weights", f"weights.root={tmp_path}", f"output_root={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and f"no {MANIFEST} in {tmp_path}" in err[0] and "fetch_weights.py" in err[0]


def test_rad_dino_part_checked_and_loaded_by_path(tree_copy, tmp_path):
    """check-weights reads the rad-dino part's configs (a crop that is no multiple of the patch is caught); eval.fid.rad_dino loads it."""
    from omegaconf import OmegaConf

    from cxr_irgen.eval.features import build_feature_extractor

    folder = tree_copy / PARTS["rad-dino"].path
    extractor = build_feature_extractor(OmegaConf.create({"features": "rad_dino", "rad_dino": str(folder)}))
    assert extractor(torch.rand(2, 1, 40, 32)).shape == (2, 16) and "its preprocessor_config.json" in extractor.name
    shutil.rmtree(folder)
    _stage_rad_dino(tmp_path / "bad", crop=30)
    _install(tree_copy, "rad-dino", tmp_path / "bad")
    lines = _lines(check_tree(tree_copy, ["rad-dino"]))
    assert lines == ["config: rad-dino preprocessor crops to 30 px, not a multiple of patch 14"]


def test_xrv_conversion_loads_strictly_with_the_same_outputs(tree, xrv_release):
    """The release file is refused by eval.xrv_weights; the converted one loads strictly and computes the same features."""
    from cxr_irgen.errors import UserError
    from cxr_irgen.eval.classifier import Classifier

    release, original = xrv_release
    with pytest.raises(UserError, match="not a plain state dict"):
        Classifier.from_xrv_weights(release)
    classifier = Classifier.from_xrv_weights(tree / PARTS["xrv-densenet121-res224-all"].path)
    images = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        expected = original.features2(images * 2048 - 1024)
        assert torch.equal(classifier.model.features2(images * 2048 - 1024), expected)


def test_fetch_skips_parts_already_in_the_tree(tree, tmp_path, monkeypatch):
    """Rerunning the script resumes: recorded, intact parts are not downloaded again."""
    root = Path(shutil.copytree(tree, tmp_path / "models"))
    calls = []
    monkeypatch.setattr(fetch, "download", lambda part, staging, urls: calls.append(part.name))
    assert fetch.main(["--recipe", "paper-unet", "--out", str(root)]) == 0
    assert calls == []
    (root / PARTS["inception-fid"].path).unlink()
    staged = tmp_path / INCEPTION
    torch.save({"w": torch.zeros(1)}, staged)
    monkeypatch.setattr(fetch, "download", lambda part, staging, urls: calls.append(part.name) or staged)
    assert fetch.main(["--recipe", "eval-only", "--out", str(root)]) == 0
    assert calls == ["inception-fid"] and not check_tree(root, ["inception-fid"])["inception-fid"]


# ---------------------------------------------------------------- weights.root resolves every pretrained key

ROOT = "/models"
KEYS = [  # (command config, overrides, key, part)
    ("train_vision", [], "vision.model.backbone.pretrained", "stable-diffusion-v1-4"),
    ("train_vision", [], "vision.model.text_encoder.pretrained", "stable-diffusion-v1-4"),
    ("train_vision", [], "vision.model.text_encoder.tokenizer", "stable-diffusion-v1-4"),
    ("train_vision", [], "vision.model.vae.pretrained", "stable-diffusion-v1-4"),
    ("train_vision", [], "vision.model.image_encoder.pretrained", "clip-vit-large-patch14"),
    ("train_vision", ["vision/model=unet-sd14-released"], "vision.model.image_encoder.pretrained", "clip-vit-base-patch32"),
    ("train_vision", ["experiment=paper_uvit_5k_rie"], "vision.model.backbone.checkpoint", "uvit-l2"),
    ("train_language", [], "model.pretrained", "bart-base"),
    ("train_language", [], "prior.image_encoder.pretrained", "clip-vit-large-patch14"),
    ("train_language", [], "prior.vae.pretrained", "stable-diffusion-v1-4"),
    ("evaluate", [], "eval.xrv_weights", "xrv-densenet121-res224-all"),
    ("evaluate", [], "eval.fid.inception_weights", "inception-fid"),
    ("evaluate", [], "eval.fid.rad_dino", "rad-dino"),
    ("evaluate", [], "labeler.checkpoint", "chexbert"),
    ("evaluate", [], "labeler.bert_dir", "bert-base-uncased"),
    ("label_reports", [], "labeler.checkpoint", "chexbert"),
]
DEFAULTS = {"stable-diffusion-v1-4": "CompVis/stable-diffusion-v1-4", "clip-vit-large-patch14": "openai/clip-vit-large-patch14",
            "clip-vit-base-patch32": "openai/clip-vit-base-patch32", "uvit-l2": "assets/imagenet256_uvit_large.pth", "bart-base": "facebook/bart-base",
            "rad-dino": "microsoft/rad-dino"}


def _compose(config: str, overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("cxr_irgen.configs", version_base="1.3"):
        return compose(config, overrides=overrides)


def test_weights_root_resolves_every_key():
    from omegaconf import OmegaConf

    for config, overrides in dict.fromkeys((config, tuple(overrides)) for config, overrides, _, _ in KEYS):
        rooted, plain = _compose(config, [*overrides, f"weights.root={ROOT}"]), _compose(config, list(overrides))
        for key, part in [(k, p) for c, o, k, p in KEYS if (c, tuple(o)) == (config, overrides)]:
            assert OmegaConf.select(rooted, key) == f"{ROOT}/{PARTS[part].path}", key
            assert OmegaConf.select(plain, key) == DEFAULTS.get(part), key
    single = _compose("train_vision", [f"weights.root={ROOT}", "vision.model.image_encoder.pretrained=/elsewhere/clip"])
    assert single.vision.model.image_encoder.pretrained == "/elsewhere/clip"  # an individual key still wins
    assert single.vision.model.vae.pretrained == f"{ROOT}/stable-diffusion-v1-4"


def test_no_pretrained_path_in_configs_bypasses_weights_root():
    """Every pretrained-path key in configs/ holding a hub id or a weights file goes through ${weights_path:...}."""
    keys = re.compile(r"^\s*(pretrained|tokenizer|checkpoint|weights|xrv_weights|inception_weights|rad_dino|bert_dir):\s*([^#\s]+)")
    offenders = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = keys.match(line)
            value = match.group(2) if match else ""
            is_path = "/" in value or re.search(r"\.(pth?|safetensors|bin|ckpt)$", value)
            if is_path and not value.startswith("${weights_path:"):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_commands_need_only_the_parts_they_load(tmp_path):
    """The pre-load check covers the parts a command's settings use, and for generate those of its run dirs."""
    from omegaconf import OmegaConf

    from cxr_irgen.weights import parts_in_use

    root = f"weights.root={ROOT}"
    assert parts_in_use(_compose("train_vision", [root, "experiment=paper_uvit_5k_text"]), ROOT) == ["stable-diffusion-v1-4", "clip-vit-large-patch14", "uvit-l2"]
    assert parts_in_use(_compose("train_language", [root, "stage=prior"]), ROOT) == ["clip-vit-large-patch14"]
    assert parts_in_use(_compose("evaluate", [root, "eval.fid.features=inception"]), ROOT) == ["inception-fid"]
    assert parts_in_use(_compose("evaluate", [root, "eval.fid.features=rad_dino"]), ROOT) == ["rad-dino"]
    vision_run = tmp_path / "vision_run"
    vision_run.mkdir()
    OmegaConf.save(OmegaConf.to_container(_compose("train_vision", [root]), resolve=True), vision_run / "config.yaml")
    assert parts_in_use(_compose("generate", [root, f"vision.checkpoint={vision_run}"]), ROOT) == ["stable-diffusion-v1-4", "clip-vit-large-patch14"]


def test_uvit_and_chexbert_configs_are_checked_against_the_model_configs(tmp_path):
    """Single-file parts: U-ViT-L/2 shapes against configs/vision/model/uvit-l2.yaml, CheXbert heads against BERT's width."""
    from transformers import BertConfig

    root, staging = tmp_path / "models", tmp_path / "staging"
    staging.mkdir()
    blocks = {f"in_blocks.{i}.norm1.weight": torch.zeros(1) for i in range(10)}
    torch.save({"patch_embed.proj.weight": torch.zeros(1024, 4, 2, 2), **blocks}, staging / "uvit.pth")
    torch.save({"model_state_dict": {"module.linear_heads.0.weight": torch.zeros(4, 16)}}, staging / "chexbert.pth")
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=5).save_pretrained(staging / "bert")
    (staging / "bert" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    for name, staged in (("uvit-l2", "uvit.pth"), ("chexbert", "chexbert.pth"), ("bert-base-uncased", "bert")):
        _install(root, name, staging / staged)
    assert not _lines(check_tree(root, ["uvit-l2", "chexbert", "bert-base-uncased"]))

    torch.save({"patch_embed.proj.weight": torch.zeros(768, 4, 2, 2), **blocks}, staging / "uvit-b.pth")
    (root / PARTS["uvit-l2"].path).unlink()
    _install(root, "uvit-l2", staging / "uvit-b.pth")
    torch.save({"model_state_dict": {"module.linear_heads.0.weight": torch.zeros(4, 8)}}, staging / "chexbert-8.pth")
    (root / PARTS["chexbert"].path).unlink()
    _install(root, "chexbert", staging / "chexbert-8.pth")
    lines = _lines(check_tree(root, ["uvit-l2", "chexbert", "bert-base-uncased"]))
    assert lines == [
        "config: uvit-l2 has patch_embed (768, 4, 2, 2) and 10 in_blocks; configs/vision/model/uvit-l2.yaml needs (1024, 4, 2, 2) and 10",
        "config: chexbert heads read 8-d states, bert-base-uncased is 16-d",
    ]
