"""Feature extractors for FID: images (B, 1, H, W) in [0, 1] → features (B, D).

- ``inception``: torch-fidelity's InceptionV3 (2048-d pool features, the standard FID
  network) via torchmetrics; needs torch-fidelity's weights file
  ``weights-inception-2015-12-05-6726825d.pth`` at a configured path (never downloaded).
  Gray images are repeated to 3 channels and quantised to uint8, resized to 299 inside.
- ``xrv``: torchxrayvision's DenseNet-121 ``features2`` (1024-d) with XRV preprocessing:
  ``x · 2048 − 1024`` (XRV's ``normalize(img, 255)`` applied to [0, 1]), centre crop,
  224 px. Weights from a local file (a state dict or safetensors of
  ``densenet121-res224-all``) or, without one, random init, named ``xrv-densenet121-random``.
- any ``nn.Module`` mapping (B, 1, H, W) in [0, 1] to (B, D), named by the caller.

Every extractor has a ``name`` used in outputs (feature extractor, dimension, resolution).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
XRV_ALL_WEIGHTS = "densenet121-res224-all"
XRV_RESOLUTION = 224


def xrv_preprocess(images: torch.Tensor, size: int = XRV_RESOLUTION) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] → (B, 1, size, size) in XRV's [-1024, 1024] range, centre-cropped square then resized."""
    _, _, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, :, top:top + side, left:left + side]
    if side != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return images * 2048.0 - 1024.0


def load_state_dict_file(path: str | Path, what: str, hint: str) -> dict:
    """A state dict from ``.safetensors`` or a ``torch.save``'d dict (``weights_only=True``); UserError otherwise."""
    path = Path(str(path))
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist; {hint}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled full models and corrupt files raise many types
        raise UserError(
            f"{what}: {path} is not a plain state dict ({type(err).__name__}); a pickled model must be converted once on a trusted machine: "
            f"python -c \"import torch; m = torch.load('{path.name}', weights_only=False); torch.save(m.state_dict(), 'state_dict.pt')\""
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state.get("state_dict", state)


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


class XRVFeatures(nn.Module):
    """DenseNet ``features2`` (B, 1024) of XRV-preprocessed images."""

    def __init__(self, weights: str | Path | None = None, model: nn.Module | None = None, resolution: int = XRV_RESOLUTION):
        super().__init__()
        self.model = model if model is not None else xrv_densenet(weights)
        self.resolution = resolution
        self.name = f"xrv-densenet121{'' if weights or model is not None else '-random'} features2 ({resolution}px)"

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) → (B, 1024); the input in channels_last makes the convolutions faster (benchmarks/eval.py)."""
        return self.model.features2(xrv_preprocess(images, self.resolution).contiguous(memory_format=torch.channels_last))


class InceptionFeatures(nn.Module):
    """torch-fidelity InceptionV3 pool features (B, 2048) of gray images repeated to RGB, uint8-quantised."""

    def __init__(self, weights: str | Path | None):
        super().__init__()
        if not weights or not Path(str(weights)).is_file():
            raise UserError(f"FID with inception needs torch-fidelity's {INCEPTION_FILE}: download {INCEPTION_URL} on a connected machine and set eval.fid.inception_weights=/path/{INCEPTION_FILE}")
        load_state_dict_file(weights, "eval.fid.inception_weights", f"place {INCEPTION_FILE} there")  # safe check before torch-fidelity unpickles it
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights))
        self.name = "inception-v3 pool3 (2048-d, 299px, torch-fidelity weights)"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.model(rgb)


class ModuleFeatures(nn.Module):
    """Wraps any module (B, 1, H, W) → (B, D) under a given name."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module.eval(), name

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images).flatten(1)


def build_feature_extractor(fid_cfg, xrv_weights: str | None = None, module: nn.Module | None = None) -> nn.Module:
    """The extractor named by ``eval.fid.features`` (inception | xrv | module; ``module`` needs the ``module`` argument)."""
    kind = str(fid_cfg.features)
    if kind == "inception":
        return InceptionFeatures(fid_cfg.get("inception_weights"))
    if kind == "xrv":
        return XRVFeatures(xrv_weights)
    if kind == "module":
        if module is None:
            raise UserError("eval.fid.features=module needs a feature module passed from Python (evaluate(..., feature_module=...))")
        return ModuleFeatures(module, getattr(module, "name", type(module).__name__))
    raise UserError(f"eval.fid.features={kind!r}: use inception, xrv or module")
