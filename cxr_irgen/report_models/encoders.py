"""Image encoders of the encoder × decoder study: images (B, 1, H, W) in [0, 1] → visual tokens (B, N, C).

One YAML per encoder under ``configs/report_models/encoder/`` (open_clip/timm style); the
``builder`` key picks a class registered with ``@register_report_encoder``, the other keys are its arguments:

- ``dve``  :class:`TimmGridEncoder`: timm DenseNet-121 grid, trained end to end.
- ``fve``  :class:`ClassifierPairEncoder`: two frozen ConvNeXt-small classifiers (coarse, fine-grained) with heads
  removed; their grids concatenated on the token axis.
- ``cve``  :class:`ClipGridEncoder`: open_clip RN50x4 visual tower without its attention pool (grid).
- ``ccve`` :class:`ClusterClipEncoder`: a shared 2-conv stem makes K three-channel "filtered images", each
  encoded by the CLIP visual tower with its attention pool → K tokens.

``num_tokens`` and ``width`` are measured once from a blank image at ``image_size``, never
written in a config. ``checkpoint`` (a ``train-report-encoder`` run dir, a weights file of this
encoder or a hub id holding ``encoder.safetensors``) and ``pretrained`` (the backbone's published
weights: a file, a folder or a hub id such as ``hf-hub:timm/convnext_small.fb_in22k``, see
:func:`~cxr_irgen.report_models.weights.resolve_weights`) load strictly. The only keys
:func:`backbone_state` leaves out are named by the architecture: the classifier head of a timm
checkpoint (these backbones are headless) and, from a whole CLIP checkpoint, all but ``visual.*``.
FVE's ``pretrained`` initialises both classifiers (ImageNet init in the paper).

    list_report_encoders()                        # ["ccve", "ccve-tiny", ..., "resnet101"]
    encoder = build_report_encoder("dve-tiny", image_size=64)
    tokens = encoder(images)                      # (B, encoder.num_tokens, encoder.width)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.weights import load_strict, read_weights, resolve_weights
from cxr_irgen.utils.registry import Registry, config_names

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
ENCODER_FILE = "encoder.safetensors"
BACKBONE_FILES = ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
ENCODER_CONFIGS = "report_models/encoder"
ENCODER_BUILDERS = Registry("report encoder builder")
register_report_encoder = ENCODER_BUILDERS.register


class VisualEncoder(nn.Module):
    """Base: resize, gray → 3 channels, normalise, then :meth:`tokens`; ``frozen`` encoders stay in eval mode."""

    def __init__(self, image_size: int, normalization: str = "imagenet", frozen: bool = False):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise UserError(f"normalization={normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.image_size, self.frozen = int(image_size), bool(frozen)
        self.num_tokens, self.width = 0, 0

    def measure(self) -> "VisualEncoder":
        """Set ``num_tokens`` and ``width`` from one blank image (call at the end of a subclass's __init__)."""
        was_training = self.training
        with torch.no_grad():
            shape = self.eval()(torch.zeros(1, 1, self.image_size, self.image_size)).shape
        self.train(was_training)
        self.num_tokens, self.width = int(shape[1]), int(shape[2])
        if self.frozen:
            self.requires_grad_(False)
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 3, S, S) normalised."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.prepare(images))

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)


def grid_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h·w, C)."""
    return grid.flatten(2).transpose(1, 2)


def build_timm(model_name: str, kwargs: dict | None = None, num_classes: int = 0) -> nn.Module:
    import timm

    return timm.create_model(str(model_name), pretrained=False, num_classes=int(num_classes), **dict(kwargs or {}))


@register_report_encoder("timm_grid")
class TimmGridEncoder(VisualEncoder):
    """DVE: a timm backbone's ``forward_features`` grid (B, h·w, C)."""

    def __init__(self, model_name: str, image_size: int, kwargs: dict | None = None, frozen: bool = False, normalization: str = "imagenet"):
        super().__init__(image_size, normalization, frozen)
        self.backbone = build_timm(model_name, kwargs)
        self.measure()

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return grid_tokens(self.backbone.forward_features(pixels))


@register_report_encoder("classifier_pair")
class ClassifierPairEncoder(VisualEncoder):
    """FVE: coarse and fine-grained classifiers' grids, concatenated → (B, h·w + h'·w', C); frozen."""

    def __init__(self, model_name: str, image_size: int, kwargs: dict | None = None, frozen: bool = True, normalization: str = "imagenet"):
        super().__init__(image_size, normalization, frozen)
        self.coarse = build_timm(model_name, kwargs)
        self.fine = build_timm(model_name, kwargs)
        self.measure()

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat([grid_tokens(self.coarse.forward_features(pixels)), grid_tokens(self.fine.forward_features(pixels))], dim=1)


def build_clip(clip: dict | DictConfig) -> nn.Module:
    """An open_clip CLIP model with random weights: ``{name: RN50x4}`` (open_clip's config) or ``{config: {...}}``."""
    import open_clip
    from open_clip.model import CLIP

    clip = OmegaConf.to_container(clip, resolve=True) if OmegaConf.is_config(clip) else dict(clip)
    config = clip.get("config") or open_clip.get_model_config(str(clip.get("name")))
    if not config:
        raise UserError(f"CLIP model {clip.get('name')!r} is not an open_clip config; give clip.name or clip.config")
    return CLIP(**config)


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows: L2-normalised image (B, D) and text (B, D) embeddings, CLIP's learned scale."""
    logits = (logit_scale.exp() * image @ text.T).float()
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@register_report_encoder("clip_grid")
class ClipGridEncoder(VisualEncoder):
    """CVE: the CLIP ResNet visual tower without its attention pool → grid (B, h·w, C)."""

    def __init__(self, clip: dict, image_size: int, frozen: bool = True, normalization: str = "clip"):
        super().__init__(image_size, normalization, frozen)
        self.visual = build_clip(clip).visual
        self.measure()

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        return grid_tokens(v.layer4(v.layer3(v.layer2(v.layer1(v.stem(pixels))))))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ClusterStem(nn.Module):
    """Conv 3→16 k5 + LN + GELU, Conv 16→3K k3 + LN + GELU: (B, 3, S, S) → K filtered images (B, K, 3, S, S)."""

    def __init__(self, clusters: int, hidden: int = 16):
        super().__init__()
        self.clusters = int(clusters)
        self.layers = nn.Sequential(
            nn.Conv2d(3, hidden, 5, padding=2), ChannelsFirstLayerNorm(hidden), nn.GELU(),
            nn.Conv2d(hidden, 3 * self.clusters, 3, padding=1), ChannelsFirstLayerNorm(3 * self.clusters), nn.GELU(),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.layers(pixels)
        return out.view(out.shape[0], self.clusters, 3, *out.shape[-2:])


@register_report_encoder("cluster_clip")
class ClusterClipEncoder(VisualEncoder):
    """CCVE: K filtered images, each through the CLIP visual tower with its attention pool → (B, K, D)."""

    def __init__(self, clip: dict, image_size: int, clusters: int = 13, stem_width: int = 16, frozen: bool = True, normalization: str = "clip"):
        super().__init__(image_size, normalization, frozen)
        self.stem = ClusterStem(clusters, stem_width)
        self.visual = build_clip(clip).visual
        self.measure()

    def filtered(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised → (B, K, 3, S, S)."""
        return self.stem(pixels)

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        slices = self.filtered(pixels)
        b, k = slices.shape[:2]
        return self.visual(slices.flatten(0, 1)).view(b, k, -1)


def list_report_encoders() -> list[str]:
    """The encoder names, one per YAML in ``configs/report_models/encoder/`` (``dve``, ``dve-tiny``, ...)."""
    return config_names(ENCODER_CONFIGS)


def build_report_encoder(name: str, **overrides) -> VisualEncoder:
    """Encoder ``name`` (a YAML in ``configs/report_models/encoder/``) with ``overrides``; weights loaded strictly."""
    return build_encoder_from_config(report_model_config("encoder", name, overrides))


def build_encoder_from_config(cfg: DictConfig) -> VisualEncoder:
    args: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    builder = ENCODER_BUILDERS.get(args.pop("builder", None))
    args.pop("name", None)
    pretrained, checkpoint = args.pop("pretrained", None), args.pop("checkpoint", None)
    pretrained_file = resolve_weights(pretrained, BACKBONE_FILES) if pretrained else None  # found before the model is built
    checkpoint_file = encoder_weights_path(checkpoint) if checkpoint else None
    try:
        encoder = builder(**args)
    except TypeError as err:
        raise UserError(f"encoder {cfg.get('name')}: {err}") from None
    if pretrained_file:
        state = read_weights(pretrained_file)
        for backbone in (getattr(encoder, n) for n in ("backbone", "coarse", "fine", "visual") if hasattr(encoder, n)):
            load_strict(backbone, backbone_state(backbone, state), pretrained)
    if checkpoint_file:
        load_strict(encoder, read_weights(checkpoint_file), checkpoint)
    if encoder.frozen:
        encoder.requires_grad_(False).eval()
    return encoder


def backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A published checkpoint's keys for ``backbone``: ``visual.*`` of a whole CLIP (prefix removed); a timm
    classifier's head (``pretrained_cfg["classifier"]``) dropped when the backbone has none. Nothing else changes."""
    own = backbone.state_dict()
    if not any(k.startswith("visual.") for k in own) and any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    head = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier")
    if head and not any(k.startswith(f"{head}.") for k in own):
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    return state


def encoder_weights_path(checkpoint: str | Path) -> Path:
    """A ``train-report-encoder`` run dir (its ``encoder/encoder.safetensors``), a weights file, or a hub id."""
    path = Path(checkpoint)
    if (path / "encoder" / ENCODER_FILE).is_file():
        return path / "encoder" / ENCODER_FILE
    return resolve_weights(checkpoint, (ENCODER_FILE,), option="checkpoint")
