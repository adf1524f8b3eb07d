"""The AUROC protocol's classifier: torchxrayvision's DenseNet, pretrained or trained here.

Two sources, one interface (:class:`Classifier`: images (B, 1, H, W) in [0, 1] → logits
(B, P) over ``pathologies``):

- :meth:`Classifier.from_xrv_weights`: DenseNet-121 with the 18 outputs of
  ``densenet121-res224-all`` (``model.pathologies``) from a local weights file, 224 px.
- :meth:`Classifier.from_run_dir`: a model written by ``cxr-irgen train-classifier``:
  the same XRV ``DenseNet`` class (growth rate / blocks configurable, so CPU runs can be
  small) trained on any data set the data layer reads, saved as ``model.safetensors`` +
  ``classifier.json`` (architecture, pathologies, resolution).

The network, its XRV input normalisation (:func:`~cxr_irgen.vision.densenet.xrv_preprocess`) and the strict
loading of a run dir live in :mod:`cxr_irgen.vision.densenet`, which the stage-2 prior's ``classifier`` input
shares.
Training targets: 1 → 1, 0 → 0; uncertain (-1) and blank follow ``uncertain`` / ``blank``
(``ignore`` masks them out of the loss, ``positive`` / ``negative`` map them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from cxr_irgen.data.labels import CHEXPERT_LABELS
from cxr_irgen.errors import UserError
from cxr_irgen.vision.densenet import CLASSIFIER_CONFIG_FILE, CLASSIFIER_WEIGHTS_FILE, XRV_RESOLUTION, build_densenet, load_classifier_run, xrv_densenet, xrv_preprocess

log = logging.getLogger(__name__)

FRONTAL_VIEWS = ("PA", "AP")
TARGET_POLICIES = ("ignore", "positive", "negative")


@dataclass
class Classifier:
    """An XRV DenseNet with its output names and input resolution."""

    model: nn.Module
    pathologies: list[str]
    resolution: int = XRV_RESOLUTION
    name: str = "xrv-densenet"
    arch: dict = field(default_factory=dict)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, len(pathologies)) raw outputs; weights and input in channels_last (faster
        convolutions, benchmarks/eval.py; ``save_pretrained`` writes contiguous copies)."""
        self.model.eval().to(memory_format=torch.channels_last)
        device = next(self.model.parameters()).device
        return self.model(xrv_preprocess(images.to(device), self.resolution).contiguous(memory_format=torch.channels_last)).float().cpu()

    @classmethod
    def from_xrv_weights(cls, weights: str | Path) -> "Classifier":
        """torchxrayvision ``densenet121-res224-all`` from a local state dict / safetensors file."""
        if not weights:
            raise UserError("the XRV classifier needs eval.xrv_weights=/path/densenet121-res224-all weights (a state dict or safetensors); or use a train-classifier run dir")
        model = xrv_densenet(weights)
        return cls(model, list(model.pathologies), XRV_RESOLUTION, f"xrv densenet121-res224-all ({Path(str(weights)).name})")

    @classmethod
    def from_run_dir(cls, path: str | Path) -> "Classifier":
        """A classifier saved by ``cxr-irgen train-classifier`` (its run dir)."""
        model, config = load_classifier_run(path)
        return cls(model, list(config["pathologies"]), int(config["resolution"]), f"trained densenet ({Path(str(path)).name})", config["arch"])

    def save_pretrained(self, path: str | Path, extra: dict | None = None) -> None:
        """Write ``model.safetensors`` and ``classifier.json`` (architecture, pathologies, resolution)."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(path / CLASSIFIER_WEIGHTS_FILE))
        config = {"arch": self.arch, "pathologies": self.pathologies, "resolution": self.resolution, **(extra or {})}
        (path / CLASSIFIER_CONFIG_FILE).write_text(json.dumps(config, indent=1))


def load_classifier(source: str, xrv_weights: str | None = None) -> Classifier:
    """``xrv`` (pretrained from ``xrv_weights``) or the path of a train-classifier run dir."""
    if str(source) == "xrv":
        return Classifier.from_xrv_weights(xrv_weights)
    return Classifier.from_run_dir(source)


def training_targets(labels: np.ndarray, uncertain: str, blank: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 14) labels → float targets and a 0/1 loss mask under the named policies for -1 and blank."""
    for key, value in (("uncertain", uncertain), ("blank", blank)):
        if value not in TARGET_POLICIES:
            raise UserError(f"{key}={value!r}: use one of {', '.join(TARGET_POLICIES)}")
    targets = (labels == 1.0).astype(np.float32)
    mask = np.ones_like(targets)
    for selector, policy in ((labels == -1.0, uncertain), (np.isnan(labels), blank)):
        if policy == "ignore":
            mask[selector] = 0.0
        elif policy == "positive":
            targets[selector] = 1.0
    return targets, mask


class ClassifierDataset(Dataset):
    """Items ``pixel_values`` (1, S, S) in [0, 1], ``targets`` (14,), ``mask`` (14,) from an index table."""

    def __init__(self, table, resolution: int, uncertain: str, blank: str):
        from cxr_irgen.data.labels import labels_from_row

        self.paths = table["image_path"].tolist()
        labels = np.stack([labels_from_row(row) for row in table[list(CHEXPERT_LABELS)].to_dict("records")])
        self.targets, self.mask = training_targets(labels, uncertain, blank)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from cxr_irgen.data.imageio import read_image

        return {
            "pixel_values": read_image(self.paths[index], self.resolution),
            "targets": torch.from_numpy(self.targets[index]),
            "mask": torch.from_numpy(self.mask[index]),
        }


def masked_bce_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Binary cross-entropy of the logits over the unmasked (image, observation) entries."""
    logits = model(xrv_preprocess(batch["pixel_values"], batch["pixel_values"].shape[-1]))
    loss = F.binary_cross_entropy_with_logits(logits, batch["targets"], reduction="none")
    return (loss * batch["mask"]).sum() / batch["mask"].sum().clamp_min(1.0)


def _frontal_split(table, split: str, max_images: int | None):
    chosen = table[(table["split"] == split) & table["view"].isin(FRONTAL_VIEWS)]
    if max_images:
        chosen = chosen.iloc[: int(max_images)]
    if chosen.empty:
        raise UserError(f"no frontal ({'/'.join(FRONTAL_VIEWS)}) images in split {split!r} of the data; check data.root and split=")
    return chosen.reset_index(drop=True)


def run(cfg) -> None:
    """`cxr-irgen train-classifier data=phantom data.root=DIR`: train, save, then score the paper protocol on real test images."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.utils.rundir import run_dir
    from cxr_irgen.utils.training import make_accelerator, train

    out = run_dir(cfg)
    table = load_table(cfg.data)
    train_table = _frontal_split(table, str(cfg.split), cfg.get("max_images"))
    resolution = int(cfg.resolution)
    dataset = ClassifierDataset(train_table, resolution, str(cfg.uncertain), str(cfg.blank))
    arch = OmegaConf.to_container(cfg.classifier, resolve=True)
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    model = build_densenet(arch, len(CHEXPERT_LABELS))
    log.info("training an XRV DenseNet (%s) on %d %s images at %d px", arch, len(dataset), cfg.split, resolution)
    result = train(accelerator, model, dataset, masked_bce_loss, cfg.trainer, out, int(cfg.seed))
    if not accelerator.is_main_process:
        return
    classifier = Classifier(accelerator.unwrap_model(model).cpu().eval(), list(CHEXPERT_LABELS), resolution, f"trained densenet ({out.name})", arch)
    classifier.save_pretrained(out, {"data": str(cfg.data.name), "split": str(cfg.split), "steps": result.step, "n_train": len(dataset)})
    summary = {"steps": result.step, "final_loss": result.losses[-1] if result.losses else None}
    if cfg.get("eval_split"):
        summary["auroc_" + str(cfg.eval_split)] = real_protocol_auroc(classifier, _frontal_split(table, str(cfg.eval_split), None), cfg)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"classifier saved to {out}; {json.dumps(summary)}")


def real_protocol_auroc(classifier: Classifier, table, cfg) -> dict:
    """The AUROC protocol on real images of an index table (their own labels)."""
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.data.labels import labels_from_row
    from cxr_irgen.eval.auroc import needed_indices, protocol_auroc, protocol_groups

    labels = np.stack([labels_from_row(row) for row in table[list(CHEXPERT_LABELS)].to_dict("records")])
    groups = protocol_groups(labels, list(cfg.pathologies), int(cfg.protocol_n), int(cfg.seed))
    indices = needed_indices(groups)
    scores = {}
    for start in range(0, len(indices), 64):
        chunk = indices[start:start + 64]
        images = torch.stack([read_image(table["image_path"].iloc[i], classifier.resolution) for i in chunk])
        scores.update(zip(chunk.tolist(), classifier.logits(images).numpy()))
    return protocol_auroc(scores, groups, classifier.pathologies)
