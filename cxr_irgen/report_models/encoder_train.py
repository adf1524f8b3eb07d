"""`cxr-irgen train-report-encoder`: pre-train the frozen encoders of the study (FVE, CVE, CCVE).

    cxr-irgen train-report-encoder encoder=fve loss=auc_margin   # coarse (14 CheXpert) + fine-grained classifiers
    cxr-irgen train-report-encoder encoder=cve                   # CLIP RN50x4 contrastive on image-impression pairs
    cxr-irgen train-report-encoder encoder=ccve                  # cluster CLIP: slice k of the stem vs the impression

Then ``cxr-irgen train-report-model encoder=fve encoder_args.checkpoint=RUN_DIR``. Run dir:
``encoder/encoder.safetensors`` (the selected encoder's weights, loaded strictly), ``best/``
(the selection: ``encoder.safetensors`` and ``state.json`` with every validation), ``fine_classes.csv``
(FVE: fine-grained classes with their counts in the training reports), ``clusters.csv``
(CCVE: the cluster of each training report's impression and the rule), ``metrics.json``
(FVE: validation AUROC of both heads; CLIP: validation contrastive loss, at the selected steps).

FVE targets: coarse = the label table's 14 CheXpert labels (1 → positive, else negative);
fine = :mod:`~cxr_irgen.report_models.fine_labels` on the ``text`` section. ``loss=bce`` or
``loss=auc_margin`` (the paper's DAM: :mod:`~cxr_irgen.report_models.auc_loss`, margin
``margin``). Model selection (:class:`Selection`): the validate split is scored every
``selection.every`` steps (default once per epoch); each FVE classifier keeps its weights of
best validation AUROC (as if trained apart), a CLIP encoder those of lowest validation loss;
training stops when none improved for ``selection.patience`` validations (paper, FVE: 10),
``trainer.max_steps`` being the upper bound. CCVE clusters (K = 13): the labeler on
the impression; the 14 CheXpert classes without Pleural Other; a report goes to its first
positive class in CheXpert's order, to No Finding when it has none.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxr_irgen.data.datasets import ImageReportDataset, collate
from cxr_irgen.data.labels import CHEXPERT_LABELS, POSITIVE
from cxr_irgen.errors import UserError
from cxr_irgen.report_models.auc_loss import AUCMarginLoss
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.encoders import ENCODER_FILE, ClassifierPairEncoder, ClipGridEncoder, ClusterClipEncoder, build_clip, build_encoder_from_config, clip_contrastive_loss
from cxr_irgen.report_models.fine_labels import FineLabels
from cxr_irgen.report_models.train import config_args, report_pairs
from cxr_irgen.report_models.weights import load_strict
from cxr_irgen.utils.files import replace_dir
from cxr_irgen.utils.rundir import run_dir
from cxr_irgen.utils.training import make_accelerator, train

log = logging.getLogger(__name__)
CLUSTER_CLASSES = tuple(c for c in CHEXPERT_LABELS if c != "Pleural Other")
CLUSTERS_FILE = "clusters.csv"
BEST_DIR = "best"
LOSSES = ("bce", "auc_margin")


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
    """FVE training module: the pair encoder (trainable here) + a linear head on each classifier's pooled grid.

    ``loss``: ``bce`` or ``auc_margin`` (AUC-M per head, with the training set's positive ratios
    ``priors`` = (coarse (14,), fine (C,)) and ``margin``).
    """

    def __init__(self, encoder: ClassifierPairEncoder, fine_classes: int, loss: str = "bce",
                 priors: tuple[torch.Tensor, torch.Tensor] | None = None, margin: float = 1.0):
        super().__init__()
        self.encoder = encoder
        width = encoder.coarse.num_features
        self.coarse_head = nn.Linear(width, len(CHEXPERT_LABELS))
        self.fine_head = nn.Linear(width, int(fine_classes))
        if loss == "auc_margin":
            self.coarse_loss, self.fine_loss = AUCMarginLoss(priors[0], margin), AUCMarginLoss(priors[1], margin)
        else:
            self.coarse_loss = self.fine_loss = nn.BCEWithLogitsLoss()

    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.encoder.prepare(images)
        coarse = self.encoder.coarse.forward_features(pixels).mean(dim=(2, 3))
        fine = self.encoder.fine.forward_features(pixels).mean(dim=(2, 3))
        return self.coarse_head(coarse), self.fine_head(fine)

    def forward(self, batch: dict) -> torch.Tensor:
        coarse, fine = self.logits(batch["pixel_values"])
        return self.coarse_loss(coarse.float(), batch["coarse"]) + self.fine_loss(fine.float(), batch["fine"])


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
    """FVE: AUROC of both heads; CLIP: mean contrastive loss over validation batches (the global RNG is not drawn)."""
    model.eval()
    if isinstance(model, ClassifierPair):
        coarse, fine, coarse_t, fine_t = [], [], [], []
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, generator=torch.Generator()):
            c, f = model.logits(batch["pixel_values"].to(device))
            coarse.append(c.cpu()), fine.append(f.cpu()), coarse_t.append(batch["coarse"]), fine_t.append(batch["fine"])
        return {"validation_auroc_coarse": _auroc(torch.cat(coarse).numpy(), torch.cat(coarse_t).numpy()),
                "validation_auroc_fine": _auroc(torch.cat(fine).numpy(), torch.cat(fine_t).numpy())}
    losses = [model({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}).item()
              for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, drop_last=len(dataset) > batch_size, generator=torch.Generator())]
    return {"validation_contrastive_loss": float(np.mean(losses))}


def selection_scores(metrics: dict) -> dict[str, float]:
    """Validation metrics → one score per selected part (higher is better; AUROCs are defined, checked before training)."""
    if "validation_contrastive_loss" in metrics:
        return {"encoder": -metrics["validation_contrastive_loss"]}
    return {"coarse": metrics["validation_auroc_coarse"], "fine": metrics["validation_auroc_fine"]}


@dataclass
class Selection:
    """Model selection and early stopping on validation scores (higher is better), one per part of the encoder.

    ``parts`` maps a part to its prefix in the encoder's state dict: FVE ``coarse.`` and ``fine.``
    (each classifier on its own AUROC), CLIP encoders ``""`` (the whole encoder). After a
    validation, a part that improved has its weights copied; :meth:`update` says stop when every
    part has gone ``patience`` validations without improving. ``<run>/best/`` holds the selected
    weights (``encoder.safetensors``) and this state (``state.json``, written last), built in
    ``best.partial`` and renamed, so a resumed run continues the same selection: its replayed
    steps reproduce the recorded validations, which :meth:`seen` skips.
    """

    run: Path
    parts: dict[str, str]
    patience: int | None
    history: list[dict] = field(default_factory=list)
    best: dict[str, dict] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)
    stopped: bool = False
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def resume(cls, run: Path, parts: dict[str, str], patience: int | None) -> "Selection":
        """The selection saved in ``run`` (a fresh one when there is none)."""
        folder = Path(run) / BEST_DIR
        if not (folder / "state.json").is_file():
            return cls(Path(run), parts, patience)
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text())
        return cls(Path(run), parts, patience, state["history"], state["best"], state["stale"], state["stopped"],
                   load_file(str(folder / ENCODER_FILE)))

    def seen(self, step: int) -> bool:
        return any(entry["step"] == step for entry in self.history)

    def update(self, step: int, scores: dict[str, float], encoder: nn.Module, write: bool = True) -> bool:
        """Record the validation of ``step``; True when training should stop."""
        state = encoder.state_dict()
        for part, prefix in self.parts.items():
            if part not in self.best or scores[part] > self.best[part]["score"]:
                self.best[part], self.stale[part] = {"step": step, "score": scores[part]}, 0
                self.weights.update({k: v.detach().cpu().clone() for k, v in state.items() if k.startswith(prefix)})
            else:
                self.stale[part] += 1
        self.history.append({"step": step, **scores})
        self.stopped = self.patience is not None and all(n >= self.patience for n in self.stale.values())
        if write:
            self.save()
        return self.stopped

    def save(self) -> Path:
        from safetensors.torch import save_file

        final = self.run / BEST_DIR
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_file(self.weights, str(partial / ENCODER_FILE))
        state = {"parts": self.parts, "patience": self.patience, "history": self.history, "best": self.best, "stale": self.stale, "stopped": self.stopped}
        (partial / "state.json").write_text(json.dumps(state, indent=2))
        return replace_dir(partial, final)


def _targets(pairs: ImageReportDataset, table: pd.DataFrame, fine: FineLabels | None, clusters: bool) -> dict[str, torch.Tensor]:
    from cxr_irgen.text.labeler import label_reports

    extra: dict[str, torch.Tensor] = {}
    if fine is not None:
        labels = table.set_index("dicom_id").loc[pairs.dicom_ids, list(CHEXPERT_LABELS)].to_numpy(np.float32)
        extra["coarse"] = torch.from_numpy((labels == POSITIVE).astype(np.float32))
        extra["fine"] = torch.from_numpy(fine.matrix(pairs.texts))
    if clusters:
        extra["cluster"] = torch.tensor([cluster_of(v) for v in label_reports(pairs.texts)], dtype=torch.long)
    return extra


def _validation_pairs(table: pd.DataFrame, sections: pd.DataFrame, cfg: DictConfig, text: str, image_size: int) -> ImageReportDataset | None:
    """The validate split's pairs (None when it has no image in ``views``; an error then if selection is on)."""
    if not len(table[(table["split"] == "validate") & table["view"].isin([str(v) for v in cfg.views])]):
        if cfg.selection.enabled:
            raise UserError(f"model selection needs validate-split images in views={list(cfg.views)}: add them to the data or set selection.enabled=false")
        return None
    return report_pairs(table, sections, "validate", cfg.views, text, image_size, bool(cfg.data.skip_bad))


def run(cfg: DictConfig) -> Path:
    from cxr_irgen.data.adapters import load_sections, load_table

    loss = str(cfg.loss)
    if loss not in LOSSES:
        raise UserError(f"loss={loss!r}: use one of {', '.join(LOSSES)}")
    encoder_cfg = report_model_config("encoder", str(cfg.encoder), {**config_args(cfg.get("encoder_args")), "frozen": False})
    builder = str(encoder_cfg.get("builder"))
    if builder not in ("classifier_pair", "clip_grid", "cluster_clip"):
        raise UserError(f"encoder={cfg.encoder}: train-report-encoder pre-trains fve, cve or ccve; dve trains with its decoder (train-report-model)")
    is_fve, is_ccve = builder == "classifier_pair", builder == "cluster_clip"
    text = str(cfg.text) if is_fve else "impression"
    image_size = int(encoder_cfg.image_size)
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    pairs = report_pairs(table, sections, "train", cfg.views, text, image_size, bool(cfg.data.skip_bad))
    val = _validation_pairs(table, sections, cfg, text, image_size)
    out = run_dir(cfg)
    fine = None
    if is_fve:
        fine = FineLabels.load(out) if (out / "fine_classes.csv").is_file() else FineLabels.build(pairs.texts, int(cfg.fine_labels.min_count))
        log.info("fine-grained classes: %d (min_count %d)", len(fine), int(cfg.fine_labels.min_count))
    extra = _targets(pairs, table, fine, is_ccve)
    val_set = LabelledPairs(val, _targets(val, table, fine, is_ccve)) if val is not None else None
    if is_fve and cfg.selection.enabled:
        for part in ("coarse", "fine"):
            positives = val_set.extra[part].sum(0)
            if not ((positives > 0) & (positives < len(val_set))).any():
                raise UserError(f"validation AUROC of the {part} classifier is undefined (no class with both outcomes among the "
                                f"{len(val_set)} validate-split images): use more validation images or selection.enabled=false")
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))  # seeds every process: the encoder's random init follows seed=
    encoder = build_encoder_from_config(encoder_cfg)
    if fine is not None and accelerator.is_main_process:
        fine.save(out)
    if is_fve:
        model: nn.Module = ClassifierPair(encoder, len(fine), loss, (extra["coarse"].mean(0), extra["fine"].mean(0)), float(cfg.margin))
        collate_fn = _classifier_collate
    else:
        model = ContrastiveClip(encoder, encoder_cfg.clip)
        collate_fn = _clip_collate
    if "cluster" in extra and accelerator.is_main_process:
        pd.DataFrame({"dicom_id": pairs.dicom_ids, "cluster": [CLUSTER_CLASSES[k] for k in extra["cluster"].tolist()]}).to_csv(out / CLUSTERS_FILE, index=False)

    selection, on_step = None, None
    if cfg.selection.enabled:
        parts = {"coarse": "coarse.", "fine": "fine."} if is_fve else {"encoder": ""}
        patience = None if cfg.selection.patience is None else int(cfg.selection.patience)
        selection = Selection.resume(out, parts, patience) if cfg.trainer.resume else Selection(out, parts, patience)
        batch_size, max_steps = int(cfg.trainer.batch_size), int(cfg.trainer.max_steps)
        every = int(cfg.selection.every or max(1, len(pairs) // (batch_size * accelerator.num_processes * int(cfg.trainer.grad_accum))))

        def on_step(step: int, wrapped: nn.Module) -> bool:
            if not (step % every == 0 or step == max_steps) or selection.seen(step):
                return False
            unwrapped = accelerator.unwrap_model(wrapped)
            scores = selection_scores(validate(unwrapped, val_set, collate_fn, batch_size, accelerator.device))
            unwrapped.train()
            stop = selection.update(step, scores, unwrapped.encoder, write=accelerator.is_main_process)
            log.info("step %d validation %s%s", step, scores, " - no improvement for selection.patience validations: stop" if stop else "")
            return stop

    if selection is not None and selection.stopped:
        log.info("%s stopped early at step %d: training is over", out, selection.history[-1]["step"])
        steps, losses = selection.history[-1]["step"], []
    else:
        result = train(accelerator, model, LabelledPairs(pairs, extra), lambda m, batch: m(batch), cfg.trainer, out, int(cfg.seed),
                       collate_fn=collate_fn, on_step=on_step)
        steps, losses = result.step, result.losses
    model = accelerator.unwrap_model(model)
    if selection is not None:
        load_strict(model.encoder, selection.weights, out / BEST_DIR)
    if accelerator.is_main_process:
        from safetensors.torch import save_model

        (out / "encoder").mkdir(exist_ok=True)
        save_model(model.encoder, str(out / "encoder" / ENCODER_FILE))
        metrics = {"encoder": str(cfg.encoder), "train_pairs": len(pairs), "steps": steps,
                   "train_loss_first": float(np.mean(losses[:10])) if losses else None,
                   "train_loss_last": float(np.mean(losses[-10:])) if losses else None}
        if fine is not None:
            metrics.update(loss=loss, fine_classes=len(fine))
        if selection is not None:
            best = selection.best
            metrics.update({"validation_auroc_coarse": best["coarse"]["score"], "validation_auroc_fine": best["fine"]["score"]} if is_fve
                           else {"validation_contrastive_loss": -best["encoder"]["score"]})
            metrics.update(selected_steps={part: b["step"] for part, b in best.items()}, validations=len(selection.history),
                           stopped_early=selection.stopped)
        elif val_set is not None:
            metrics.update(validate(model, val_set, collate_fn, int(cfg.trainer.batch_size), accelerator.device))
        log.info("metrics: %s", metrics)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return out
