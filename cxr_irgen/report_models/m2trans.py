"""M2Trans's image encoder (Miura et al., NAACL 2021): DenseNet-121 pre-trained on 14 CheXpert labels × 3 classes.

    cxr-irgen train-label-encoder encoder=dve                      # DenseNet-121 grid + 14×3 softmax head
    cxr-irgen train-report-model encoder=dve decoder=m2 encoder_args.checkpoint=RUN_DIR images_per_study=3 trainer=m2trans   # M2Trans

Each observation is a 3-way softmax over (negative, uncertain, positive) of the label
table's value (blank → negative, as in ifcc), on the pooled grid of the encoder; the loss is
the mean cross-entropy over the 14 observations. The run dir holds ``encoder/encoder.safetensors``
(the encoder alone, loaded strictly by ``encoder_args.checkpoint``) and ``metrics.json``
(validation accuracy and positive-class AUROC per observation).

The report model then follows ifcc with ``images_per_study=3`` (a study's images through the encoder, tokens
max-merged: :func:`~cxr_irgen.report_models.model.study_tokens`) and ``trainer=m2trans`` (Adam, Noam schedule, warmup 2000).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxr_irgen.data.labels import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from cxr_irgen.report_models.encoders import ENCODER_FILE, VisualEncoder

log = logging.getLogger(__name__)
CLASSES = (NEGATIVE, UNCERTAIN, POSITIVE)


def label_classes(labels: np.ndarray) -> np.ndarray:
    """(N, 14) label table values (1 / 0 / -1 / NaN) → (N, 14) class ids 0 negative, 1 uncertain, 2 positive; blank → negative."""
    classes = np.zeros(labels.shape, dtype=np.int64)
    classes[labels == UNCERTAIN] = 1
    classes[labels == POSITIVE] = 2
    return classes


class LabelClassifier(nn.Module):
    """An encoder's mean-pooled tokens (B, C) → logits (B, 14, 3)."""

    def __init__(self, encoder: VisualEncoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.width, len(CHEXPERT_LABELS) * len(CLASSES))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images).mean(dim=1)).view(len(images), len(CHEXPERT_LABELS), len(CLASSES))

    def forward(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch["pixel_values"]).flatten(0, 1).float(), batch["classes"].flatten())


class ImageClasses(Dataset):
    """Items ``{"pixel_values", "classes" (14,)}`` from an image/report dataset and the images' label classes."""

    def __init__(self, pairs, classes: np.ndarray):
        self.pairs, self.classes = pairs, torch.from_numpy(classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pairs[index]["pixel_values"], "classes": self.classes[index]}


@torch.no_grad()
def validate(model: LabelClassifier, dataset: ImageClasses, batch_size: int, device) -> dict:
    """Accuracy over all 14×N decisions and mean positive-vs-rest AUROC over observations with both outcomes."""
    from sklearn.metrics import roc_auc_score

    from cxr_irgen.data.datasets import collate

    model.eval()
    probs, truth = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        probs.append(model.logits(batch["pixel_values"].to(device)).float().softmax(-1).cpu())
        truth.append(batch["classes"])
    p, t = torch.cat(probs).numpy(), torch.cat(truth).numpy()
    positive = t == 2
    aurocs = {name: float(roc_auc_score(positive[:, i], p[:, i, 2])) for i, name in enumerate(CHEXPERT_LABELS) if 0 < positive[:, i].sum() < len(t)}
    return {"validation_accuracy": float((p.argmax(-1) == t).mean()),
            "validation_auroc_positive_mean": float(np.mean(list(aurocs.values()))) if aurocs else None,
            "validation_auroc_positive": aurocs}


def run(cfg: DictConfig) -> Path:
    """``train-label-encoder``: train ``cfg.encoder`` with the 14×3 head on the train split's labels; save the encoder."""
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import collate
    from cxr_irgen.report_models.configs import report_model_config
    from cxr_irgen.report_models.encoders import build_encoder_from_config
    from cxr_irgen.report_models.train import config_args, report_pairs
    from cxr_irgen.utils.rundir import run_dir
    from cxr_irgen.utils.training import make_accelerator, train

    out = run_dir(cfg)
    encoder = build_encoder_from_config(report_model_config("encoder", str(cfg.encoder), {**config_args(cfg.get("encoder_args")), "frozen": False}))
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    by_image = table.set_index("dicom_id")[list(CHEXPERT_LABELS)]

    def items(split: str) -> ImageClasses:
        pairs = report_pairs(table, sections, split, cfg.views, str(cfg.text), encoder.image_size, bool(cfg.data.skip_bad))
        return ImageClasses(pairs, label_classes(by_image.loc[pairs.dicom_ids].to_numpy(np.float32)))

    model = LabelClassifier(encoder)
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    result = train(accelerator, model, items("train"), lambda m, batch: m(batch), cfg.trainer, out, int(cfg.seed), collate_fn=collate)
    model = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        from safetensors.torch import save_model

        (out / "encoder").mkdir(exist_ok=True)
        save_model(model.encoder, str(out / "encoder" / ENCODER_FILE))
        metrics = {"encoder": str(cfg.encoder), "steps": result.step,
                   "train_loss_first": float(np.mean(result.losses[:10])) if result.losses else None,
                   "train_loss_last": float(np.mean(result.losses[-10:])) if result.losses else None}
        if ((table["split"] == "validate") & table["view"].isin(list(cfg.views))).any():
            metrics.update(validate(model, items("validate"), int(cfg.trainer.batch_size), accelerator.device))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", metrics)
    return out
