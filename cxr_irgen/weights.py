"""One folder of pretrained weights (``weights.root``) for offline servers: its parts, its manifest, its check.

``scripts/fetch_weights.py`` fills the folder on a connected machine; every pretrained path in
``configs/`` is written ``${weights_path:<path in the folder>,<default>}``, which resolves to
``<weights.root>/<path>`` when ``weights.root`` is set and to the default (a hub id, a relative
path or null) otherwise, so one override moves every part and a single key still overrides its own.

``manifest.json`` lists every file of the folder (path, sha256, size, source, licence, part).
:func:`check_tree` reports one line per problem: a part whose folder is gone, a missing file, a
truncated file, a wrong hash, a config that does not fit the model configs. ``cxr-irgen
check-weights`` prints those lines and the recipes that are ready; the other commands run the
quick form (sizes and configs, no hashing) on the parts their config points to before loading anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cxr_irgen.errors import UserError
from cxr_irgen.utils.files import write_text_atomic

MANIFEST = "manifest.json"
RESOLVER = "weights_path"


@dataclass(frozen=True)
class Part:
    """One pretrained component: where it lives under ``weights.root`` and where it comes from.

    ``path`` is a folder (``required`` and ``patterns`` relative to it) or, for single-file parts,
    the file itself (``required`` empty). ``source`` is ``hf:<repo id>`` or ``url:<address>``.
    """

    name: str
    path: str
    source: str
    licence: str
    required: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    @property
    def is_file(self) -> bool:
        return not self.required

    def required_files(self) -> list[str]:
        """Paths (relative to the root) that the part cannot do without."""
        return [self.path] if self.is_file else [f"{self.path}/{name}" for name in self.required]

    def wanted(self, relative: str) -> bool:
        """Whether a file (relative to the part's folder) belongs to the part."""
        return any(fnmatch.fnmatch(relative, pattern) for pattern in self.patterns)


_CLIP_FILES = ("config.json", "model.safetensors")
_CLIP_PATTERNS = (*_CLIP_FILES, "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json")
_SD_FILES = (
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json",
)
_TIMM = ("config.json", "model.safetensors")

PARTS = {
    p.name: p
    for p in (
        Part("stable-diffusion-v1-4", "stable-diffusion-v1-4", "hf:CompVis/stable-diffusion-v1-4", "CreativeML OpenRAIL-M",
             _SD_FILES, (*_SD_FILES, "model_index.json", "scheduler/scheduler_config.json", "tokenizer/*")),
        Part("clip-vit-large-patch14", "clip-vit-large-patch14", "hf:openai/clip-vit-large-patch14", "MIT", _CLIP_FILES, _CLIP_PATTERNS),
        Part("clip-vit-base-patch32", "clip-vit-base-patch32", "hf:openai/clip-vit-base-patch32", "MIT", _CLIP_FILES, _CLIP_PATTERNS),
        Part("bart-base", "bart-base", "hf:facebook/bart-base", "Apache-2.0",
             ("config.json", "model.safetensors"),
             ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")),
        Part("xrv-densenet121-res224-all", "xrv/densenet121-res224-all.safetensors",
             "url:https://github.com/mlmed/torchxrayvision/releases/download/v1/nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
             "Apache-2.0 (torchxrayvision)"),
        Part("inception-fid", "inception/weights-inception-2015-12-05-6726825d.pth",
             "url:https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth", "Apache-2.0 (torch-fidelity)"),
        Part("rad-dino", "rad-dino", "hf:microsoft/rad-dino", "MIT (microsoft/rad-dino; research use only, per its model card)",
             ("config.json", "model.safetensors", "preprocessor_config.json"), ("config.json", "model.safetensors", "preprocessor_config.json")),
        Part("uvit-l2", "uvit/imagenet256_uvit_large.pth", "url:github.com/baofff/U-ViT (README link; pass --uvit-url)", "MIT (U-ViT)"),
        Part("chexbert", "chexbert/chexbert.pth", "hf:StanfordAIMI/RRG_scorers", "CheXbert research licence (Stanford; commercial use needs a licence)"),
        Part("bert-base-uncased", "bert-base-uncased", "hf:google-bert/bert-base-uncased", "Apache-2.0",
             ("config.json", "vocab.txt"), ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json")),
        Part("timm-densenet121", "timm/densenet121.tv_in1k", "hf:timm/densenet121.tv_in1k", "BSD-3-Clause (torchvision)", _TIMM, _TIMM),
        Part("timm-resnet101", "timm/resnet101.tv_in1k", "hf:timm/resnet101.tv_in1k", "BSD-3-Clause (torchvision)", _TIMM, _TIMM),
        Part("timm-convnext-small", "timm/convnext_small.fb_in1k", "hf:timm/convnext_small.fb_in1k", "MIT (ConvNeXt)", _TIMM, _TIMM),
        Part("openclip-rn50x4", "open_clip/RN50x4-openai", "hf:timm/resnet50x4_clip.openai", "MIT (OpenAI CLIP)",
             ("open_clip_config.json", "open_clip_model.safetensors"), ("open_clip_config.json", "open_clip_model.safetensors")),
    )
}

_EVAL = ("xrv-densenet121-res224-all", "inception-fid")
_UNET = ("stable-diffusion-v1-4", "clip-vit-large-patch14", "bart-base", *_EVAL)
RECIPES = {
    "paper-unet": _UNET,
    "paper-uvit": (*_UNET, "uvit-l2"),
    "eval-only": (*_EVAL, "rad-dino"),  # RAD-DINO: CheXGenBench's feature space (eval.fid.features=rad_dino)
    "all": tuple(PARTS),
}


def weights_path(relative: str, default, *, _root_):
    """The ``${weights_path:REL,DEFAULT}`` resolver: ``<weights.root>/REL`` when ``weights.root`` is set, else DEFAULT."""
    from omegaconf import OmegaConf

    root = OmegaConf.select(_root_, "weights.root", default=None)
    return str(Path(str(root)) / relative) if root else default


def register_resolver() -> None:
    """Register the ``${weights_path:NAME}`` OmegaConf resolver (``import cxr_irgen`` does it; calling again is a no-op)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, weights_path)


# ---------------------------------------------------------------- manifest

def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_entries(root: Path, part: Part, files: list[str], source: str | None = None) -> list[dict]:
    """Manifest rows (file, sha256, size, source, licence, part) of ``files`` (relative to ``root``)."""
    return [
        {"file": rel, "sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size, "source": source or part.source, "licence": part.licence, "part": part.name}
        for rel in sorted(files)
    ]


def read_manifest(root: Path) -> list[dict]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"no {MANIFEST} in {root}: fill it with `python scripts/fetch_weights.py --recipe paper-unet --out DIR` on a connected machine and copy DIR here")
    try:
        return list(json.loads(path.read_text())["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a weights manifest ({type(err).__name__}: {err})") from None


def write_manifest(root: Path, entries: list[dict]) -> None:
    """Atomically write ``manifest.json`` (entries sorted by file)."""
    path = Path(root) / MANIFEST
    write_text_atomic(path, json.dumps({"format": 1, "files": sorted(entries, key=lambda e: e["file"])}, indent=1))


def _file_problems(root: Path, entry: dict, hashes: bool) -> list[str]:
    path = root / entry["file"]
    if not path.is_file():
        return [f"missing: {entry['file']} ({entry['part']})"]
    size = path.stat().st_size
    if size != entry["size"]:
        kind = "truncated" if size < entry["size"] else "wrong size"
        return [f"{kind}: {entry['file']} has {size} of {entry['size']} bytes ({entry['part']})"]
    if hashes and sha256_file(path) != entry["sha256"]:
        return [f"wrong hash: {entry['file']} (sha256 differs from {MANIFEST}: copy it again; {entry['part']})"]
    return []


def verify_files(root: Path, entries: list[dict], parts: list[str], hashes: bool = True) -> dict[str, list[str]]:
    """Problems per part: a part whose folder/file is gone gives one line; otherwise one line per bad file."""
    problems: dict[str, list[str]] = {name: [] for name in parts}
    for name in parts:
        part = PARTS[name]
        rows = [e for e in entries if e["part"] == name]
        if not rows:
            problems[name].append(f"not fetched: {name} (not in {MANIFEST})")
            continue
        if not (root / part.path).exists():
            problems[name].append(f"missing: {part.path}{'' if part.is_file else '/'} ({name}; {len(rows)} files)")
            continue
        listed = {e["file"] for e in rows}
        problems[name] += [f"incomplete: {rel} is not in {MANIFEST} ({name})" for rel in part.required_files() if rel not in listed]
        for entry in rows:
            problems[name] += _file_problems(root, entry, hashes)
    return problems


# ---------------------------------------------------------------- config checks (configs, not weights)

def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _vocab_size(folder: Path) -> int:
    """Tokens of a saved tokenizer (``vocab.json``, ``vocab.txt`` or ``tokenizer.json``) plus its added tokens, without building it."""
    added = len(_json(folder / "added_tokens.json")) if (folder / "added_tokens.json").is_file() else 0
    if (folder / "vocab.json").is_file():
        return len(_json(folder / "vocab.json")) + added
    if (folder / "vocab.txt").is_file():
        return len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines()) + added
    spec = _json(folder / "tokenizer.json")
    return len(set(spec["model"]["vocab"]) | {t["content"] for t in spec.get("added_tokens", [])})


def _check_sd(root: Path) -> list[str]:
    from transformers import CLIPTextConfig

    sd = root / PARTS["stable-diffusion-v1-4"].path
    unet, vae = _json(sd / "unet/config.json"), _json(sd / "vae/config.json")
    text = CLIPTextConfig.from_pretrained(str(sd / "text_encoder"))
    tokens = _vocab_size(sd / "tokenizer")
    out = []
    if unet.get("_class_name") != "UNet2DConditionModel" or vae.get("_class_name") != "AutoencoderKL":
        out.append(f"config: {sd.name} unet/vae are {unet.get('_class_name')}/{vae.get('_class_name')}, not UNet2DConditionModel/AutoencoderKL")
    if unet.get("cross_attention_dim") != text.hidden_size:
        out.append(f"config: {sd.name} unet cross_attention_dim {unet.get('cross_attention_dim')} != text_encoder hidden_size {text.hidden_size}")
    if unet.get("in_channels") != vae.get("latent_channels"):
        out.append(f"config: {sd.name} unet in_channels {unet.get('in_channels')} != vae latent_channels {vae.get('latent_channels')}")
    if tokens > text.vocab_size:
        out.append(f"config: {sd.name} tokenizer has {tokens} tokens, text_encoder vocab_size {text.vocab_size}")
    return out


def _sd_text_width(root: Path) -> int | None:
    config = root / PARTS["stable-diffusion-v1-4"].path / "text_encoder/config.json"
    return _json(config).get("hidden_size") if config.is_file() else None


def _check_clip(name: str, output: str) -> Callable[[Path], list[str]]:
    """The reference-image token must have the text width: ``projected`` → projection_dim, ``pooled`` → vision hidden size."""

    def check(root: Path) -> list[str]:
        from transformers import CLIPConfig

        config = CLIPConfig.from_pretrained(str(root / PARTS[name].path))
        width = config.projection_dim if output == "projected" else config.vision_config.hidden_size
        text = _sd_text_width(root)
        if text is not None and width != text:
            return [f"config: {name} {output} image embedding is {width}-d but the SD text encoder is {text}-d (vision.model.conditioning.project_image=false)"]
        return []

    return check


def _check_vocab(name: str, config_class: str) -> Callable[[Path], list[str]]:
    """The model config loads and its embedding covers every token of the saved tokenizer."""

    def check(root: Path) -> list[str]:
        import transformers

        folder = root / PARTS[name].path
        config = getattr(transformers, config_class).from_pretrained(str(folder))
        tokens = _vocab_size(folder)
        return [] if tokens <= config.vocab_size else [f"config: {name} tokenizer has {tokens} tokens, the model {config.vocab_size}"]

    return check


def _check_xrv(root: Path) -> list[str]:
    """The safetensors header (names, shapes) against torchxrayvision's DenseNet-121 (built without weights)."""
    from safetensors import safe_open

    from cxr_irgen.vision.densenet import xrv_densenet

    expected = {k: tuple(v.shape) for k, v in xrv_densenet().state_dict().items()}
    with safe_open(str(root / PARTS["xrv-densenet121-res224-all"].path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        return [f"config: xrv DenseNet-121 does not fit (missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]}, shape e.g. {wrong[:2]})"]
    return []


def _mapped_state(path: Path) -> dict | None:
    """A torch state dict read with ``weights_only``, memory-mapped (no tensor data read) unless the file
    predates torch's zip format; None when it is not a plain dict."""
    import torch

    for mmap in (True, False):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            return state if isinstance(state, dict) else None
        except Exception:  # legacy archives refuse mmap; pickled objects and corrupt files raise many types
            continue
    return None


def _check_rad_dino(root: Path) -> list[str]:
    """config.json is a DINOv2 (the model class RAD-DINO loads as) and the processor crops to a multiple of its patch."""
    folder = root / PARTS["rad-dino"].path
    config, processor = _json(folder / "config.json"), _json(folder / "preprocessor_config.json")
    if config.get("model_type") != "dinov2":
        return [f"config: rad-dino config.json has model_type {config.get('model_type')!r}, not 'dinov2'"]
    crop = processor.get("crop_size", {}).get("height")
    if not crop or crop % int(config.get("patch_size", 14)):
        return [f"config: rad-dino preprocessor crops to {crop} px, not a multiple of patch {config.get('patch_size')}"]
    return []


def _check_inception(root: Path) -> list[str]:
    if _mapped_state(root / PARTS["inception-fid"].path) is None:
        return ["config: inception-fid is not a plain state dict (torch.load weights_only failed)"]
    return []


def _check_uvit(root: Path) -> list[str]:
    from cxr_irgen.vision.uvit import UVIT_L2_IMAGENET256 as arch

    state = _mapped_state(root / PARTS["uvit-l2"].path)
    if state is None:
        return ["config: uvit-l2 is not a plain state dict (torch.load weights_only failed)"]
    patch = arch["patch_size"]
    expected = (arch["width"], arch["in_channels"], patch, patch)
    shape = tuple(state["patch_embed.proj.weight"].shape) if "patch_embed.proj.weight" in state else None
    blocks = len({k.split(".")[1] for k in state if k.startswith("in_blocks.")})
    if shape != expected or blocks != arch["depth"] // 2:
        return [f"config: uvit-l2 has patch_embed {shape} and {blocks} in_blocks; configs/vision/model/uvit-l2.yaml needs {expected} and {arch['depth'] // 2}"]
    return []


def _check_chexbert(root: Path) -> list[str]:
    saved = _mapped_state(root / PARTS["chexbert"].path)
    state = saved.get("model_state_dict") if saved else None
    if not isinstance(state, dict):
        return ["config: chexbert.pth holds no model_state_dict"]
    bert = root / PARTS["bert-base-uncased"].path / "config.json"
    head = state.get("module.linear_heads.0.weight", state.get("linear_heads.0.weight"))
    if head is not None and bert.is_file() and head.shape[1] != _json(bert)["hidden_size"]:
        return [f"config: chexbert heads read {head.shape[1]}-d states, bert-base-uncased is {_json(bert)['hidden_size']}-d"]
    return []


def _check_json(name: str, config: str) -> Callable[[Path], list[str]]:
    def check(root: Path) -> list[str]:
        _json(root / PARTS[name].path / config)
        return []

    return check


CONFIG_CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "stable-diffusion-v1-4": _check_sd,
    "clip-vit-large-patch14": _check_clip("clip-vit-large-patch14", "projected"),
    "clip-vit-base-patch32": _check_clip("clip-vit-base-patch32", "pooled"),
    "bart-base": _check_vocab("bart-base", "BartConfig"),
    "xrv-densenet121-res224-all": _check_xrv,
    "inception-fid": _check_inception,
    "rad-dino": _check_rad_dino,
    "uvit-l2": _check_uvit,
    "chexbert": _check_chexbert,
    "bert-base-uncased": _check_vocab("bert-base-uncased", "BertConfig"),
    "timm-densenet121": _check_json("timm-densenet121", "config.json"),
    "timm-resnet101": _check_json("timm-resnet101", "config.json"),
    "timm-convnext-small": _check_json("timm-convnext-small", "config.json"),
    "openclip-rn50x4": _check_json("openclip-rn50x4", "open_clip_config.json"),
}


def check_config(root: Path, name: str) -> list[str]:
    """Load the part's configuration (never its weights) and compare it with the model configs; one line per problem."""
    try:
        return CONFIG_CHECKS[name](root)
    except Exception as err:  # unreadable configs raise many types (OSError, ValueError, KeyError, ...)
        return [f"config: {name} cannot be read ({type(err).__name__}: {' '.join(str(err).split())[:160]})"]


def check_tree(root: str | Path, parts: list[str] | None = None, hashes: bool = True) -> dict[str, list[str]]:
    """Problems per part (manifest, then configs of the parts whose files are intact) for ``parts`` (default: all known)."""
    root = Path(str(root))
    entries = read_manifest(root)
    names = list(parts) if parts is not None else list(PARTS)
    problems = verify_files(root, entries, names, hashes)
    for name in names:
        if not problems[name]:
            problems[name] = check_config(root, name)
    return problems


def ready_recipes(problems: dict[str, list[str]]) -> list[str]:
    return [recipe for recipe, parts in RECIPES.items() if all(not problems.get(p, ["unchecked"]) for p in parts)]


# ---------------------------------------------------------------- what a command needs

def _select(cfg, key: str):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=None)


# Config subtrees a command does not load in its current setting (their paths are not required).
UNUSED_WHEN: dict[str, Callable] = {
    "eval.fid.inception_weights": lambda c: _select(c, "eval.fid.features") != "inception",
    "eval.fid.rad_dino": lambda c: _select(c, "eval.fid.features") != "rad_dino",
    "eval.inception_score.weights": lambda c: "inception_score" not in (_select(c, "eval.metrics") or []),
    "eval.xrv_weights": lambda c: "xrv" not in (_select(c, "eval.fid.features"), _select(c, "eval.auroc.classifier")),
    "labeler": lambda c: _select(c, "labeler.name") != "chexbert",
    "vision.model.image_encoder": lambda c: _select(c, "vision.model.conditioning.mode") == "text",
    "model": lambda c: _select(c, "stage") == "prior",
    "prior": lambda c: _select(c, "stage") == "autoencoder",
    "prior.image_encoder": lambda c: _select(c, "prior.input") != "clip",
    "prior.vae": lambda c: _select(c, "prior.input") != "latent",
    "prior.classifier": lambda c: _select(c, "prior.input") != "classifier",
}


def _strings(node, key: str, cfg) -> Iterator[str]:
    """Every string value of a config, skipping the subtrees ``cfg`` does not use and values that cannot resolve here."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.errors import OmegaConfBaseException

    if key in UNUSED_WHEN and UNUSED_WHEN[key](cfg):
        return
    if isinstance(node, (DictConfig, ListConfig)):
        is_dict = isinstance(node, DictConfig)
        for child in node.keys() if is_dict else range(len(node)):
            try:
                value = node[child]
            except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra run
                continue
            yield from _strings(value, (f"{key}.{child}" if key else str(child)) if is_dict else key, cfg)
    elif isinstance(node, str):
        yield node


def parts_in_use(cfg, root: str | Path) -> list[str]:
    """Parts whose path under ``root`` a composed command config points to, in the settings it will use.

    Run directories named by ``vision.checkpoint``/``language.checkpoint`` (generate) add the parts
    their saved ``config.yaml`` points to.
    """
    from omegaconf import OmegaConf

    root = Path(str(root))
    configs = [cfg]
    for key in ("vision.checkpoint", "language.checkpoint"):
        saved = Path(str(_select(cfg, key))) / "config.yaml" if _select(cfg, key) else None
        if saved is not None and saved.is_file():
            configs.append(OmegaConf.load(saved))
    values = {value for c in configs for value in _strings(c, "", c)}
    return [name for name, part in PARTS.items() if any(v == str(root / part.path) or v.startswith(f"{root / part.path}/") for v in values)]


def require_weights(cfg) -> None:
    """Before a command loads anything: when ``weights.root`` is set, the parts it uses must be intact (sizes, configs)."""
    root = _select(cfg, "weights.root")
    if not root:
        return
    names = parts_in_use(cfg, root)
    if not names:
        return
    problems = [line for lines in check_tree(root, names, hashes=False).values() for line in lines]
    if problems:
        raise UserError(f"weights.root={root}: {'; '.join(problems)} (details: cxr-irgen check-weights weights.root={root})")


# ---------------------------------------------------------------- the command

def run(cfg) -> None:
    """``cxr-irgen check-weights weights.root=DIR``: one line per problem, then the recipes that are ready."""
    from cxr_irgen.utils.rundir import run_dir

    root = _select(cfg, "weights.root")
    if not root:
        raise UserError("check-weights needs weights.root=DIR (the folder written by scripts/fetch_weights.py)")
    if not Path(str(root)).is_dir():
        raise UserError(f"weights.root={root} is not a directory")
    entries = read_manifest(Path(str(root)))
    fetched = [name for name in PARTS if any(e["part"] == name for e in entries)]
    problems = check_tree(root, fetched, hashes=bool(cfg.get("hashes", True)))
    lines = [line for name in fetched for line in problems[name]]
    ready = ready_recipes(problems)
    size = sum(int(e["size"]) for e in entries)
    lines += [
        f"{root}: {len(entries)} files, {size / 1e9:.2f} GB, parts: {', '.join(fetched) or 'none'}",
        f"ready recipes: {', '.join(ready) or 'none'}",
    ]
    report = "\n".join(lines)
    print(report)
    (run_dir(cfg) / "check_weights.txt").write_text(report + "\n")
    if any(problems[name] for name in fetched):
        sys.exit(1)
