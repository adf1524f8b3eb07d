"""Frozen CLIP encoders: the text encoder (prompt → (B, 77, D) hidden states + (B, D) pooled)
and the reference-image encoder (images (B, 1, H, W) in [0, 1] → (B, D) embedding).

Both load from a hub id or a local directory (SD v1.4 ``text_encoder``/``tokenizer`` subfolders,
``openai/clip-vit-large-patch14``) or are built with seeded random weights from a small config.
Without a pretrained tokenizer, CLIP's BPE vocabulary shipped inside open_clip is converted once
to a Hugging Face ``vocab.json`` + ``merges.txt`` directory (cached) so tokenisation works offline.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.vision.loading import freeze, load_pretrained, plain, seeded_init

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MAX_LENGTH = 77
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def cache_root() -> Path:
    """Where derived artefacts (the converted tokenizer) are cached: ``$CXR_IRGEN_CACHE`` or ``~/.cache/cxr_irgen``."""
    return Path(os.environ.get("CXR_IRGEN_CACHE", Path.home() / ".cache" / "cxr_irgen"))


def openclip_tokenizer_dir(root: Path | None = None) -> Path:
    """Convert open_clip's ``bpe_simple_vocab_16e6.txt.gz`` to a CLIPTokenizer directory (once; cached).

    Token ids equal OpenAI CLIP's (49,408 tokens; ``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407),
    padding with ``<|endoftext|>`` as Stable Diffusion's tokenizer does.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    out = Path(root or cache_root()) / "clip-tokenizer"
    if all((out / f).exists() for f in _TOKENIZER_FILES):
        return out
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (partial / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (partial / "tokenizer_config.json").write_text(json.dumps({"model_max_length": CLIP_MAX_LENGTH, "do_lower_case": True, **special}))
    try:
        os.replace(partial, out)
    except OSError:  # another process finished first
        pass
    return out


def build_tokenizer(cfg):
    """CLIPTokenizer from ``cfg.tokenizer`` (hub id/dir with ``cfg.tokenizer_subfolder``) or the converted open_clip BPE."""
    from transformers import CLIPTokenizer

    source = cfg.get("tokenizer")
    if source in (None, "openclip"):
        return CLIPTokenizer.from_pretrained(str(openclip_tokenizer_dir()))
    return load_pretrained(CLIPTokenizer, source, cfg.get("tokenizer_subfolder"), "vocab.json, merges.txt, tokenizer_config.json")


class ClipTextEncoder(nn.Module):
    """Frozen CLIP text model + tokenizer: prompts → hidden states (B, 77, D), pooled (B, D) and, for a
    model with CLIP's text projection, the projected embedding ``text_embeds`` (B, D) (CLIP's joint space)."""

    def __init__(self, model, tokenizer):
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.hidden_size = model.config.hidden_size
        self.projected = hasattr(model, "text_projection")

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """(B, 77) token ids, padded/truncated to CLIP's context length."""
        return self.tokenizer(list(prompts), padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        tower = self.model.text_model if self.projected else self.model  # CLIPTextModelWithProjection wraps a CLIPTextModel
        out = tower(self.tokenize(prompts).to(device))
        features = {"text_hidden": out.last_hidden_state, "text_pooled": out.pooler_output}
        if self.projected:
            features["text_embeds"] = self.model.text_projection(out.pooler_output)
        return features

    def train(self, mode: bool = True):
        return super().train(False)


def build_text_encoder(cfg, projected: bool = False) -> ClipTextEncoder:
    """``cfg``: pretrained (hub id/dir or null), subfolder (text_encoder), tokenizer, tokenizer_subfolder, config, init_seed.

    ``projected``: load CLIP's text projection too (``CLIPTextModelWithProjection``: ``pretrained`` must be a
    CLIP repository such as openai/clip-vit-large-patch14, whose text tower is SD v1.4's text encoder).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projected else CLIPTextModel
    if cfg.get("pretrained"):
        model, info = load_pretrained(cls, cfg.pretrained, cfg.get("subfolder"), "config.json and model.safetensors", output_loading_info=True)
        if projected and any(k.startswith("text_projection") for k in info["missing_keys"]):
            raise UserError(f"text_encoder.pretrained={cfg.pretrained} has no CLIP text projection: use openai/clip-vit-large-patch14 (or its local copy) for conditioning.space=projected")
    else:
        config = CLIPTextConfig(**plain(cfg.config), max_position_embeddings=CLIP_MAX_LENGTH)
        model = seeded_init(lambda: cls(config), cfg.get("init_seed", 0))
    return ClipTextEncoder(model, build_tokenizer(cfg))


class ClipImageEncoder(nn.Module):
    """Frozen CLIP vision tower: images (B, 1, H, W) in [0, 1] → embedding (B, D).

    Resizes to the model's input size, repeats gray to RGB and applies CLIP's own mean/std
    (``normalize: clip``; the released code used mean = std = 0.5, ``normalize: half``). ``output``:
    ``projected`` (image_embeds of CLIPVisionModelWithProjection) or ``pooled`` (pooler_output of the
    vision transformer).
    """

    def __init__(self, model, output: str = "projected", mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.model = freeze(model)
        self.output = output
        self.image_size = model.config.image_size
        self.embed_dim = model.config.projection_dim if output == "projected" else model.config.hidden_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 3, S, S) CLIP-normalised model input."""
        size = (self.image_size, self.image_size)
        if images.shape[-2:] != size:
            images = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=self.normalize(images).to(dtype))
        return out.image_embeds if self.output == "projected" else out.pooler_output

    def train(self, mode: bool = True):
        return super().train(False)


NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "half": ((0.5,) * 3, (0.5,) * 3)}


def build_clip_image_encoder(cfg, output: str | None = None) -> ClipImageEncoder:
    """``cfg``: pretrained (default openai/clip-vit-large-patch14), subfolder, output (projected|pooled; the
    ``output`` argument wins), normalize (clip|half), config, init_seed."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    output = output or cfg.get("output", "projected")
    normalize = cfg.get("normalize", "clip")
    if normalize not in NORMALIZATIONS:
        raise UserError(f"image_encoder.normalize={normalize!r}: use clip (CLIP's mean/std) or half (0.5/0.5, as the released code)")
    cls = CLIPVisionModelWithProjection if output == "projected" else CLIPVisionModel
    if cfg.get("pretrained"):
        model = load_pretrained(cls, cfg.pretrained, cfg.get("subfolder"), "config.json and model.safetensors")
    else:
        config = CLIPVisionConfig(**plain(cfg.config))
        model = seeded_init(lambda: cls(config), cfg.get("init_seed", 0))
    return ClipImageEncoder(model, output, *NORMALIZATIONS[normalize])
