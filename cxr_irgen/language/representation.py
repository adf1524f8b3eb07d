"""The frozen image representation the stage-2 prior reads (``prior.input``).

Images (B, 1, H, W) in [0, 1] are resized to ``image_size`` and become:
``clip`` the CLIP image embedding (B, D) (vision module's ``ClipImageEncoder``, CLIP-normalised),
``latent`` the VAE latent (B, 4, h, w) (vision module's codec), ``image`` the pixels (B, 1, S, S), or
``classifier`` a trained DenseNet's pooled features (B, C) (:class:`~cxr_irgen.vision.densenet.DenseNetFeatures`;
``image_size`` is then the encoder's own resolution).
Every encoder is frozen: eval mode, no gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.language.prior import PRIOR_INPUTS, VECTOR_INPUTS
from cxr_irgen.vision.loading import freeze


class ImageRepresentation(nn.Module):
    """Frozen images (B, 1, H, W) → prior input of shape (B, *input_shape)."""

    def __init__(self, kind: str, image_size: int, encoder: nn.Module | None = None):
        super().__init__()
        if kind not in PRIOR_INPUTS:
            raise UserError(f"prior.input={kind!r}: use one of {', '.join(PRIOR_INPUTS)}")
        self.kind = kind
        self.image_size = int(image_size)
        self.encoder = freeze(encoder) if isinstance(encoder, nn.Module) else encoder

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: (D,) for clip and classifier, (4, h, w) for latent, (1, S, S) for image."""
        if self.kind in VECTOR_INPUTS:
            return (int(self.encoder.embed_dim),)
        if self.kind == "latent":
            side = self.image_size // int(self.encoder.downscale)
            return (int(self.encoder.latent_channels), side, side)
        return (1, self.image_size, self.image_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        if self.kind in VECTOR_INPUTS:
            return self.encoder(images).float()
        if self.kind == "latent":
            return self.encoder.encode(images).float()
        return images.float()

    def train(self, mode: bool = True):
        return super().train(False)


def build_image_representation(prior_cfg) -> ImageRepresentation:
    """From ``prior.input``, ``prior.image_size`` and the ``prior.image_encoder`` / ``prior.vae`` / ``prior.classifier`` configs
    (vision module shapes; ``prior.classifier.sha1``, as a prior run records it, pins the encoder's weights file)."""
    kind = str(prior_cfg.input)
    encoder = None
    if kind == "classifier":
        from cxr_irgen.vision.densenet import build_densenet_features

        recorded = prior_cfg.get("classifier") or {}
        encoder = build_densenet_features(recorded.get("source"), recorded.get("xrv_weights"), recorded.get("sha1"))
        return ImageRepresentation(kind, encoder.resolution, encoder)
    if kind == "clip":
        from cxr_irgen.vision.encoders import build_clip_image_encoder

        encoder = build_clip_image_encoder(prior_cfg.image_encoder)
    elif kind == "latent":
        from cxr_irgen.vision.codec import build_vae

        encoder = build_vae(prior_cfg.vae)
    return ImageRepresentation(kind, int(prior_cfg.image_size), encoder)
