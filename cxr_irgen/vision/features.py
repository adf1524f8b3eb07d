"""The ``prepare`` stage: cache VAE latents and CLIP text/image features so training steps touch only the backbone.

Layout of a feature cache directory:
- ``images-NNNNN.safetensors``: ``latents`` (n, 4, h, w) and ``image_embeds`` (n, Di) of every
  training image (each is also a reference candidate), in index order, ``shard_size`` per file;
- ``prompts.safetensors``: ``text_hidden`` (P, 77, Dt), ``text_pooled`` (P, Dt) and, with CLIP's text
  projection, ``text_embeds`` (P, Dt), one row per
  distinct prompt (a few thousand label vectors on MIMIC, so text is stored once per prompt);
- ``index.parquet``: dicom_id, prompt_id, study_id, subject_id and the 14 labels, row i = image i;
- ``meta.json``: the encoder/codec config and prompt wording the cache was made with, and the
  tensors it holds (``contents``); a mismatch, or a cache without ``image_embeds`` for a model
  conditioned on a reference image, is refused with one line (:func:`check_feature_cache`).

Latents are the VAE posterior mean (``vae.sample: false``). The reference of item ``i`` is chosen
at load time from the cached image embeddings, seeded by (seed, epoch, i) exactly as
:class:`cxr_irgen.data.datasets.VisionDataset` chooses it, so cached and uncached runs see
the same references.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cxr_irgen.data.datasets import item_seed
from cxr_irgen.data.imageio import read_image
from cxr_irgen.data.labels import CHEXPERT_LABELS, labels_to_prompt, parse_labels
from cxr_irgen.data.reference import EXCLUDE_RULES, ReferenceIndex
from cxr_irgen.errors import UserError
from cxr_irgen.utils.progress import progress_bar
from cxr_irgen.vision.model import FrozenEncoders

log = logging.getLogger(__name__)
META = "meta.json"
TEMPLATE_PROBE = parse_labels("Cardiomegaly=1, Edema=0, Fracture=-1")


def cache_fingerprint(model_cfg) -> dict:
    """The parts of the model config that determine cached features, and the prompt wording the text was encoded from."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(model_cfg, resolve=True)
    encoders = {key: plain[key] for key in ("image_size", "text_encoder", "image_encoder", "vae")}
    return {**encoders, "space": plain["conditioning"].get("space"), "prompt_template": labels_to_prompt(TEMPLATE_PROBE)}


def required_contents(model_cfg) -> list[str]:
    """The tensors a cache must hold for ``model_cfg``: reference-image embeddings unless ``conditioning.mode=text``,
    projected text embeddings for ``average`` in the ``projected`` space."""
    conditioning = model_cfg.conditioning
    projected = conditioning.mode == "average" and conditioning.get("space") == "projected"
    return ["latents", "text_hidden", "text_pooled"] + (["text_embeds"] if projected else []) + (["image_embeds"] if conditioning.mode != "text" else [])


def check_feature_cache(cache_dir: str | Path, model_cfg) -> dict:
    """``meta.json`` of the cache at ``cache_dir``; a one-line UserError unless it was made for ``model_cfg`` and holds what it needs."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / META).exists():
        raise UserError(f"no feature cache at {cache_dir}: run `cxr-irgen train-vision prepare=true` first (or set features=null)")
    meta = json.loads((cache_dir / META).read_text())
    if meta["model"] != cache_fingerprint(model_cfg):
        raise UserError(f"feature cache {cache_dir} was made with another encoder/codec config or prompt wording: re-run prepare=true for this vision/model")
    missing = [name for name in required_contents(model_cfg) if name not in meta.get("contents", [])]
    if missing:
        needs = f"conditioning.mode={model_cfg.conditioning.mode} space={model_cfg.conditioning.get('space')}"
        raise UserError(f"feature cache {cache_dir} holds no {', '.join(missing)}, which {needs} needs (the cache holds {', '.join(meta.get('contents', []))}): re-run prepare=true with this vision/model")
    return meta


@torch.no_grad()
def cache_features(encoders: FrozenEncoders, index: pd.DataFrame, model_cfg, out_dir: Path, batch_size: int = 64, shard_size: int = 4096, device="cpu") -> Path:
    """Encode every image of ``index`` (and every distinct prompt) once and write the cache to ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoders = encoders.to(device)
    labels = index[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    prompts = [labels_to_prompt(v) for v in labels]
    distinct = sorted(set(prompts))
    prompt_id = {p: i for i, p in enumerate(distinct)}
    text = {key: [] for key in ["text_hidden", "text_pooled"] + (["text_embeds"] if encoders.text_encoder.projected else [])}
    for start in progress_bar(range(0, len(distinct), batch_size), desc="cache prompts"):
        encoded = encoders.text_encoder(distinct[start : start + batch_size])
        for key in text:
            text[key].append(encoded[key].float().cpu())
    save_file({k: torch.cat(v).contiguous() for k, v in text.items()}, str(out_dir / "prompts.safetensors"))

    paths = index["image_path"].tolist()
    for shard, shard_start in enumerate(progress_bar(range(0, len(paths), shard_size), desc="cache images")):
        tensors = {"latents": [], "image_embeds": []}
        for start in range(shard_start, min(shard_start + shard_size, len(paths)), batch_size):
            images = torch.stack([read_image(p, model_cfg.image_size) for p in paths[start : min(start + batch_size, shard_start + shard_size)]]).to(device)
            tensors["latents"].append(encoders.vae.encode(images).float().cpu())
            if encoders.image_encoder is not None:
                tensors["image_embeds"].append(encoders.image_encoder(images).float().cpu())
        save_file({k: torch.cat(v).contiguous() for k, v in tensors.items() if v}, str(out_dir / f"images-{shard:05d}.safetensors"))

    table = pd.DataFrame({"dicom_id": index["dicom_id"].astype(str).tolist(), "prompt_id": [prompt_id[p] for p in prompts]})
    for column in ("study_id", "subject_id"):
        table[column] = index[column].astype(str).tolist()
    table[list(CHEXPERT_LABELS)] = labels
    table.to_parquet(out_dir / "index.parquet")
    contents = ["latents", *text] + (["image_embeds"] if encoders.image_encoder is not None else [])
    meta = {"model": cache_fingerprint(model_cfg), "contents": contents, "images": len(paths), "prompts": len(distinct), "shard_size": shard_size}
    (out_dir / META).write_text(json.dumps(meta, indent=1))
    log.info("cached features of %d images and %d prompts in %s", len(paths), len(distinct), out_dir)
    return out_dir


class CachedFeatureDataset(Dataset):
    """Items of a feature cache: ``latents`` (4, h, w), ``text_hidden`` (77, Dt), ``text_pooled`` (Dt)
    and, with ``reference``, the reference's ``image_embeds`` (Di) and its ``reference_row``."""

    def __init__(self, cache_dir: Path, model_cfg, reference: bool, seed: int = 0, epoch_fn: Callable[[], int] | None = None):
        from safetensors.torch import load_file

        cache_dir = Path(cache_dir)
        check_feature_cache(cache_dir, model_cfg)
        self.table = pd.read_parquet(cache_dir / "index.parquet")
        self.text = load_file(str(cache_dir / "prompts.safetensors"))
        shards = [load_file(str(p)) for p in sorted(cache_dir.glob("images-*.safetensors"))]
        self.images = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}
        self.prompt_ids = self.table["prompt_id"].to_numpy()
        self.labels = self.table[list(CHEXPERT_LABELS)].to_numpy(np.float32)
        self.dicom_ids = self.table["dicom_id"].tolist()
        self.row_of = {d: i for i, d in enumerate(self.dicom_ids)}
        # Reference candidates are the cached images themselves (no paths needed: their embeddings are here).
        exclude = str(model_cfg.reference.exclude)
        groups = self.table[EXCLUDE_RULES[exclude]].tolist() if exclude in ("study", "patient") else None
        self.reference = ReferenceIndex(self.dicom_ids, self.labels, self.dicom_ids, groups, exclude) if reference else None
        self.seed, self.epoch_fn = seed, epoch_fn

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        prompt = int(self.prompt_ids[index])
        item = {"latents": self.images["latents"][index], **{key: values[prompt] for key, values in self.text.items()}}
        if self.reference is not None:
            epoch = self.epoch_fn() if self.epoch_fn else 0
            row = self.row_of[self.reference.lookup(self.labels[index], exclude=self.dicom_ids[index], seed=item_seed(self.seed, epoch, index))]
            item["image_embeds"] = self.images["image_embeds"][row]
            item["reference_row"] = torch.tensor(row)
        return item
