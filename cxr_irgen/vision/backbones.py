"""The diffusion backbones, one registry: ``@register_vision_backbone("kind")`` on a builder
``(backbone cfg, condition width, condition tokens) → nn.Module``; a ``vision/model`` YAML picks one with ``backbone.kind``.

- ``unet``: diffusers' UNet2DConditionModel (pretrained hub id/dir + subfolder, or ``config`` for random init), here.
- ``uvit``: :class:`~cxr_irgen.vision.uvit.UViT`, registered in :mod:`~cxr_irgen.vision.uvit`.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.utils.registry import Registry
from cxr_irgen.vision.loading import load_pretrained, plain, seeded_init

BACKBONE_WEIGHTS = "diffusion_pytorch_model.safetensors"
VISION_BACKBONES = Registry("vision backbone")
register_vision_backbone = VISION_BACKBONES.register


@register_vision_backbone("unet")
def build_unet(cfg: DictConfig, cond_dim: int, num_tokens: int) -> nn.Module:
    """``pretrained`` (hub id or dir, + ``subfolder``) or a seeded random init from ``config``; cross-attention width ``cond_dim``."""
    from diffusers import UNet2DConditionModel

    if cfg.get("pretrained"):
        unet = load_pretrained(UNet2DConditionModel, cfg.pretrained, cfg.get("subfolder"), f"config.json and {BACKBONE_WEIGHTS}")
        if unet.config.cross_attention_dim != cond_dim:
            raise UserError(f"U-Net cross_attention_dim {unet.config.cross_attention_dim} != condition width {cond_dim}: use a text encoder of width {unet.config.cross_attention_dim}")
        return unet
    return seeded_init(lambda: UNet2DConditionModel(**plain(cfg.config), cross_attention_dim=cond_dim), cfg.get("init_seed", 0))
