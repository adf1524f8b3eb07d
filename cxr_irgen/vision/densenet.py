"""torchxrayvision's DenseNet as a frozen image encoder: XRV preprocessing, the model from a weights file or from a
``cxr-irgen train-classifier`` run dir, and its pooled features.

- :func:`xrv_densenet`: the XRV ``DenseNet`` (DenseNet-121 with XRV's 18 outputs unless ``num_classes`` is given),
  weights from a local file or random.
- :func:`load_classifier_run`: the DenseNet a train-classifier run saved (``classifier.json`` + ``model.safetensors``),
  loaded strictly.
- :class:`DenseNetFeatures`: images (B, 1, H, W) in [0, 1] → pooled features (B, C) (XRV's ``features2``: ReLU and global
  average pool of the last dense block, what the classifier's linear head reads); the stage-2 prior's ``classifier`` input.

The AUROC classifier (:mod:`cxr_irgen.eval.classifier`) and the FID ``xrv`` extractor (:mod:`cxr_irgen.eval.features`)
are built from these.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.vision.loading import file_sha1, freeze, load_state_dict_file

XRV_ALL_WEIGHTS = "densenet121-res224-all"
XRV_RESOLUTION = 224
CLASSIFIER_CONFIG_FILE = "classifier.json"
CLASSIFIER_WEIGHTS_FILE = "model.safetensors"


def xrv_preprocess(images: torch.Tensor, size: int = XRV_RESOLUTION) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] → (B, 1, size, size) in XRV's [-1024, 1024] range, centre-cropped square then resized."""
    _, _, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, :, top:top + side, left:left + side]
    if side != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return images * 2048.0 - 1024.0


def xrv_densenet(weights: str | Path | None = None, **arch) -> nn.Module:
    """torchxrayvision ``DenseNet`` (18 XRV outputs unless ``num_classes`` is given) with weights from a local file or random."""
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None, **arch)
    model.pathologies = list(xrv.models.model_urls[XRV_ALL_WEIGHTS]["labels"]) if "num_classes" not in arch else None
    if weights:
        state = load_state_dict_file(weights, "eval.xrv_weights", f"place torchxrayvision's {XRV_ALL_WEIGHTS} weights (as a state dict) there")
        state = {k: v for k, v in state.items() if k != "op_threshs"}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"eval.xrv_weights={weights} does not fit DenseNet-121 (missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]})")
    return model.eval()


def build_densenet(arch: dict, num_classes: int) -> nn.Module:
    """An XRV ``DenseNet`` (1 input channel) with the given growth rate, blocks and stem width."""
    return xrv_densenet(
        growth_rate=int(arch["growth_rate"]), block_config=tuple(int(b) for b in arch["block_config"]),
        num_init_features=int(arch["num_init_features"]), num_classes=num_classes,
    )


def load_classifier_run(path: str | Path) -> tuple[nn.Module, dict]:
    """The DenseNet of a train-classifier run dir and its ``classifier.json`` (arch, pathologies, resolution); strict."""
    from safetensors.torch import load_model

    path = Path(str(path))
    if not (path / CLASSIFIER_CONFIG_FILE).is_file() or not (path / CLASSIFIER_WEIGHTS_FILE).is_file():
        raise UserError(f"{path} is not a train-classifier run: it needs {CLASSIFIER_CONFIG_FILE} and {CLASSIFIER_WEIGHTS_FILE}")
    config = json.loads((path / CLASSIFIER_CONFIG_FILE).read_text())
    model = build_densenet(config["arch"], len(config["pathologies"]))
    try:
        load_model(model, str(path / CLASSIFIER_WEIGHTS_FILE))
    except RuntimeError as err:
        raise UserError(f"{path / CLASSIFIER_WEIGHTS_FILE} does not match {CLASSIFIER_CONFIG_FILE}: {str(err).splitlines()[0]}") from None
    return model.eval(), config


class DenseNetFeatures(nn.Module):
    """Frozen images (B, 1, H, W) in [0, 1] → pooled DenseNet features (B, embed_dim), at the encoder's ``resolution``.

    ``record`` names the encoder for a prior's ``generator.json``: ``source`` (an absolute train-classifier run dir, or
    ``xrv``), ``xrv_weights`` and the ``sha1`` of the weights file, which :func:`build_densenet_features` checks again.
    """

    def __init__(self, model: nn.Module, resolution: int, record: dict):
        super().__init__()
        self.model = freeze(model)
        self.resolution = int(resolution)
        self.record = record

    @property
    def embed_dim(self) -> int:
        return int(self.model.classifier.in_features)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features2(xrv_preprocess(images.float(), self.resolution))

    def train(self, mode: bool = True):
        return super().train(False)


def build_densenet_features(source: str | None, xrv_weights: str | None = None, sha1: str | None = None) -> DenseNetFeatures:
    """``source``: a train-classifier run dir, or ``xrv`` (DenseNet-121 from ``xrv_weights``, 224 px). With ``sha1`` (as a
    prior run recorded it) the weights file must be the one the prior was trained on."""
    if not source:
        raise UserError("prior.input=classifier needs prior.classifier.source: a train-classifier run dir, or xrv with prior.classifier.xrv_weights=FILE")
    if str(source) == "xrv":
        if not xrv_weights:
            raise UserError("prior.classifier.source=xrv needs prior.classifier.xrv_weights=/path/densenet121-res224-all weights (a state dict or safetensors)")
        weights_file = Path(str(xrv_weights)).resolve()
        model, resolution, record = xrv_densenet(weights_file), XRV_RESOLUTION, {"source": "xrv", "xrv_weights": str(weights_file)}
    else:
        run = Path(str(source)).resolve()
        model, config = load_classifier_run(run)
        weights_file, resolution, record = run / CLASSIFIER_WEIGHTS_FILE, int(config["resolution"]), {"source": str(run), "xrv_weights": None}
    found = file_sha1(weights_file)
    if sha1 and found != sha1:
        raise UserError(f"{weights_file} changed since the prior was trained on it (sha1 {found[:12]}, recorded {sha1[:12]}): use the encoder the prior run names")
    return DenseNetFeatures(model, resolution, {**record, "sha1": found})
