"""`cxr-irgen train-report-encoder`: pre-train the frozen encoders of the study (FVE, CVE, CCVE).

    cxr-irgen train-report-encoder encoder=fve      # coarse (14 CheXpert) + fine-grained classifiers, BCE
    cxr-irgen train-report-encoder encoder=cve      # CLIP RN50x4 contrastive on image-impression pairs
    cxr-irgen train-report-encoder encoder=ccve     # cluster CLIP: slice k of the stem vs the impression

Then ``cxr-irgen train-report-model encoder=fve encoder_args.checkpoint=RUN_DIR``. Run dir:
``encoder/encoder.safetensors`` (the encoder's weights, loaded strictly), ``fine_classes.csv``
(FVE: fine-grained classes with their counts in the training reports), ``clusters.csv``
(CCVE: the cluster of each training report's impression and the rule), ``metrics.json``
(FVE: validation AUROC of both heads; CLIP: validation contrastive loss).

FVE targets: coarse = the label table's 14 CheXpert labels (1 → positive, else negative);
fine = :mod:`~cxr_irgen.report_models.fine_labels` on the ``text`` section. The paper's
DAM/AUC-margin loss (``libauc``) is not used: BCE. CCVE clusters (K = 13): the labeler on
the impression; the 14 CheXpert classes without Pleural Other; a report goes to its first
positive class in CheXpert's order, to No Finding when it has none.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxr_irgen.data.datasets import ImageReportDataset, collate
from cxr_irgen.data.labels import CHEXPERT_LABELS, POSITIVE
from cxr_irgen.errors import UserError
from cxr_irgen.report_models.encoders import (
    ENCODER_FILE, ClassifierPairEncoder, ClipGridEncoder, ClusterClipEncoder, build_clip, build_encoder_from_config, clip_contrastive_loss,
    model_config,
)
from cxr_irgen.report_models.fine_labels import FineLabels
from cxr_irgen.report_models.train import config_args, report_pairs
from cxr_irgen.utils.rundir import run_dir
from cxr_irgen.utils.training import make_accelerator, train

log = logging.getLogger(__name__)
CLUSTER_CLASSES = tuple(c for c in CHEXPERT_LABELS if c != "Pleural Other")
CLUSTERS_FILE = "clusters.csv"


def cluster_of(labels: np.ndarray) -> int:
    """Index in :data:`CLUSTER_CLASSES` of the first positive class (CheXpert order), No Finding (0) when none."""
    for k, name in enumerate(CLUSTER_CLASSES):
        if name != "No Finding" and labels[CHEXPERT_LABELS.index(name)] == POSITIVE:
            return k
    return 0


class LabelledPairs(Dataset):
    """Image/report pairs with extra per-item tensors (targets, cluster) and the text for CLIP."""

    def __init__(self, pairs: ImageReportDataset, extra: dict[str, torch.Tensor]):
        self.pairs, self.extra = pairs, extra

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.pairs[index]
        return {"pixel_values": item["pixel_values"], "text": item["text"], **{k: v[index] for k, v in self.extra.items()}}


class ClassifierPair(nn.Module):
    """FVE training module: the pair encoder (trainable here) + a linear head on each classifier's pooled grid."""

    def __init__(self, encoder: ClassifierPairEncoder, fine_classes: int):
        super().__init__()
        self.encoder = encoder
        width = encoder.coarse.num_features
        self.coarse_head = nn.Linear(width, len(CHEXPERT_LABELS))
        self.fine_head = nn.Linear(width, int(fine_classes))

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.encoder.prepare(images)
        coarse = self.encoder.coarse.forward_features(pixels).mean(dim=(2, 3))
        fine = self.encoder.fine.forward_features(pixels).mean(dim=(2, 3))
        return self.coarse_head(coarse), self.fine_head(fine)

    def forward(self, batch: dict) -> torch.Tensor:
        coarse, fine = self.logits(batch["pixel_values"])
        return F.binary_cross_entropy_with_logits(coarse.float(), batch["coarse"]) + F.binary_cross_entropy_with_logits(fine.float(), batch["fine"])


class ContrastiveClip(nn.Module):
    """CVE/CCVE training module: the encoder's CLIP visual tower with the text tower of the same CLIP config."""

    def __init__(self, encoder: ClipGridEncoder | ClusterClipEncoder, clip_cfg):
        super().__init__()
        self.encoder = encoder
        clip = build_clip(clip_cfg)
        clip.visual = encoder.visual  # one module: the weights trained here are the encoder's
        self.clip = clip

    def image_features(self, batch: dict) -> torch.Tensor:
        pixels = self.encoder.prepare(batch["pixel_values"])
        if isinstance(self.encoder, ClusterClipEncoder):
            slices = self.encoder.filtered(pixels)
            pixels = slices[torch.arange(len(slices), device=slices.device), batch["cluster"]]
        return self.clip.encode_image(pixels, normalize=True)

    def forward(self, batch: dict) -> torch.Tensor:
        image = self.image_features(batch)
        text = self.clip.encode_text(batch["tokens"], normalize=True)
        return clip_contrastive_loss(image, text, self.clip.logit_scale)


def _tokenize(texts: list[str]) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(texts)


def _clip_collate(items: list[dict]) -> dict:
    batch = collate(items)
    batch["tokens"] = _tokenize(batch.pop("text"))
    return batch


def _classifier_collate(items: list[dict]) -> dict:
    batch = collate(items)
    batch.pop("text")
    return batch


def _auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    """Mean AUROC over the classes with both outcomes present (None when none has)."""
    from sklearn.metrics import roc_auc_score

    values = [roc_auc_score(targets[:, c], scores[:, c]) for c in range(targets.shape[1]) if 0 < targets[:, c].sum() < len(targets)]
    return float(np.mean(values)) if values else None


@torch.no_grad()
def validate(model: nn.Module, dataset: Dataset, collate_fn, batch_size: int, device) -> dict:
    """FVE: AUROC of both heads; CLIP: mean contrastive loss over validation batches."""
    model.eval()
    if isinstance(model, ClassifierPair):
        coarse, fine, coarse_t, fine_t = [], [], [], []
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn):
            c, f = model.logits(batch["pixel_values"].to(device))
            coarse.append(c.cpu()), fine.append(f.cpu()), coarse_t.append(batch["coarse"]), fine_t.append(batch["fine"])
        return {"validation_auroc_coarse": _auroc(torch.cat(coarse).numpy(), torch.cat(coarse_t).numpy()),
                "validation_auroc_fine": _auroc(torch.cat(fine).numpy(), torch.cat(fine_t).numpy())}
    losses = [model({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}).item()
              for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, drop_last=len(dataset) > batch_size)]
    return {"validation_contrastive_loss": float(np.mean(losses))}


def _targets(pairs: ImageReportDataset, table: pd.DataFrame, fine: FineLabels | None, clusters: bool) -> dict[str, torch.Tensor]:
    from cxr_irgen.eval.labeler import label_reports

    extra: dict[str, torch.Tensor] = {}
    if fine is not None:
        labels = table.set_index("dicom_id").loc[pairs.dicom_ids, list(CHEXPERT_LABELS)].to_numpy(np.float32)
        extra["coarse"] = torch.from_numpy((labels == POSITIVE).astype(np.float32))
        extra["fine"] = torch.from_numpy(fine.matrix(pairs.texts))
    if clusters:
        extra["cluster"] = torch.tensor([cluster_of(v) for v in label_reports(pairs.texts)], dtype=torch.long)
    return extra


def run(cfg: DictConfig) -> Path:
    from cxr_irgen.data.adapters import load_sections, load_table

    out = run_dir(cfg)
    encoder_cfg = model_config("encoder", str(cfg.encoder), {**config_args(cfg.get("encoder_args")), "frozen": False})
    encoder = build_encoder_from_config(encoder_cfg)
    kind = type(encoder)
    if kind not in (ClassifierPairEncoder, ClipGridEncoder, ClusterClipEncoder):
        raise UserError(f"encoder={cfg.encoder}: train-report-encoder pre-trains fve, cve or ccve; dve trains with its decoder (train-report-model)")
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    is_fve = kind is ClassifierPairEncoder
    text = str(cfg.text) if is_fve else "impression"
    pairs = report_pairs(table, sections, "train", cfg.views, text, encoder.image_size, bool(cfg.data.skip_bad))
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    fine = None
    if is_fve:
        fine = FineLabels.load(out) if (out / "fine_classes.csv").is_file() else FineLabels.build(pairs.texts, int(cfg.fine_labels.min_count))
        if accelerator.is_main_process:
            fine.save(out)
        log.info("fine-grained classes: %d (min_count %d)", len(fine), int(cfg.fine_labels.min_count))
        model: nn.Module = ClassifierPair(encoder, len(fine))
        collate_fn = _classifier_collate
    else:
        model = ContrastiveClip(encoder, encoder_cfg.clip)
        collate_fn = _clip_collate
    extra = _targets(pairs, table, fine, kind is ClusterClipEncoder)
    if "cluster" in extra and accelerator.is_main_process:
        pd.DataFrame({"dicom_id": pairs.dicom_ids, "cluster": [CLUSTER_CLASSES[k] for k in extra["cluster"].tolist()]}).to_csv(out / CLUSTERS_FILE, index=False)
    result = train(accelerator, model, LabelledPairs(pairs, extra), lambda m, batch: m(batch), cfg.trainer, out, int(cfg.seed), collate_fn=collate_fn)
    model = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        from safetensors.torch import save_model

        (out / "encoder").mkdir(exist_ok=True)
        save_model(model.encoder, str(out / "encoder" / ENCODER_FILE))
        metrics = {"encoder": str(cfg.encoder), "train_pairs": len(pairs), "steps": result.step,
                   "train_loss_first": float(np.mean(result.losses[:10])) if result.losses else None,
                   "train_loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
        if fine is not None:
            metrics["fine_classes"] = len(fine)
        heldout = table[(table["split"] == "validate") & table["view"].isin(list(cfg.views))]
        if len(heldout):
            val = report_pairs(table, sections, "validate", cfg.views, text, encoder.image_size, bool(cfg.data.skip_bad))
            metrics.update(validate(model, LabelledPairs(val, _targets(val, table, fine, kind is ClusterClipEncoder)), collate_fn, int(cfg.trainer.batch_size), accelerator.device))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", metrics)
    return out

