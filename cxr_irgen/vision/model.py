"""The vision model: frozen encoders (CLIP text, CLIP image, VAE/codec) and the trainable part
(condition tokens + diffusion backbone), built from the ``vision/model`` config.

Saved layout (``<run_dir>/model/``): ``backbone/`` (diffusers ``save_pretrained``: config.json +
diffusion_pytorch_model.safetensors), ``conditioning.safetensors`` and ``model.yaml`` (the
resolved ``vision/model`` config, which names or seeds the frozen encoders).

    list_vision_models()                                   # ["unet-sd14", ..., "unet-tiny", "uvit-tiny"]
    cfg, encoders, model = build_vision_model("unet-tiny", image_size=32)   # random init of the trainable part
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.utils.registry import config_names
from cxr_irgen.vision import uvit  # noqa: F401  (registers the "uvit" backbone)
from cxr_irgen.vision.backbones import VISION_BACKBONES
from cxr_irgen.vision.codec import build_vae
from cxr_irgen.vision.conditioning import Conditioning, build_conditioning, space_outputs
from cxr_irgen.vision.encoders import build_clip_image_encoder, build_text_encoder
from cxr_irgen.vision.loading import plain
from cxr_irgen.vision.schedules import BackboneTime, scheduler_kwargs

MODEL_DIR = "model"
BACKBONE_DIR = "backbone"
CONDITIONING_WEIGHTS = "conditioning.safetensors"
MODEL_CONFIG = "model.yaml"
MODEL_CONFIGS = "vision/model"
SHARED_BASE = "base"  # vision/model/base.yaml: the defaults every model config starts from, not a model


class FrozenEncoders(nn.Module):
    """CLIP text encoder, CLIP reference-image encoder (None in ``text`` mode) and the latent codec."""

    def __init__(self, text_encoder, image_encoder, vae):
        super().__init__()
        self.text_encoder, self.image_encoder, self.vae = text_encoder, image_encoder, vae

    @property
    def image_dim(self) -> int:
        """Di, the reference-image embedding width (the text width when there is no image encoder)."""
        return self.image_encoder.embed_dim if self.image_encoder is not None else self.text_encoder.hidden_size

    def encode_conditions(self, prompts: list[str], reference_pixels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Prompts and reference images (B, 1, S, S) → text_hidden (B, 77, Dt), text_pooled (B, Dt), image_embeds (B, Di)."""
        features = self.text_encoder(prompts)
        if self.image_encoder is not None:
            if reference_pixels is None:
                raise UserError("this model is conditioned on a reference image: pass reference images (or use conditioning.mode=text)")
            features["image_embeds"] = self.image_encoder(reference_pixels)
        return features

    @torch.no_grad()
    def encode_batch(self, batch: dict) -> dict[str, torch.Tensor]:
        """A VisionDataset batch → latents (B, 4, h, w) plus the condition features."""
        features = self.encode_conditions(batch["prompt"], batch.get("reference_pixels"))
        features["latents"] = self.vae.encode(batch["pixel_values"])
        return features

    def train(self, mode: bool = True):
        return super().train(False)


class VisionModel(nn.Module):
    """Trainable part: ``(noisy latents (B, 4, h, w), step indices (B,), features) → prediction (B, 4, h, w)``: the noise,
    the velocity or the clean latents, as the noise schedule's ``prediction_type`` says.

    ``backbone_time`` maps a step index of the noise schedule to the backbone's time input
    (:class:`~cxr_irgen.vision.schedules.BackboneTime`; identity for SD's schedule).
    """

    def __init__(self, backbone: nn.Module, conditioning: Conditioning, backbone_time: BackboneTime | None = None):
        super().__init__()
        self.backbone, self.conditioning = backbone, conditioning
        self.backbone_time = backbone_time or BackboneTime({"kind": "sd_scaled_linear", "num_train_timesteps": 1000})

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The backbone's prediction (B, 4, h, w) at step indices ``timesteps`` under condition tokens (B, L, D)."""
        return self.backbone(noisy_latents, self.backbone_time(timesteps).to(noisy_latents.device), encoder_hidden_states=condition).sample

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.predict(noisy_latents, timesteps, self.conditioning(features))

    def save_pretrained(self, out_dir: Path, model_cfg: DictConfig) -> Path:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        self.backbone.save_pretrained(str(out_dir / BACKBONE_DIR), safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.conditioning.state_dict().items()}, str(out_dir / CONDITIONING_WEIGHTS))
        (out_dir / MODEL_CONFIG).write_text(OmegaConf.to_yaml(model_cfg, resolve=True))
        return out_dir


def vision_model_config(name: str, overrides: list[str] = ()) -> DictConfig:
    """The ``vision/model`` config ``name`` (e.g. ``unet-tiny``) composed from the packaged configs."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("cxr_irgen.configs", version_base="1.3"):
        return compose("train_vision", overrides=[f"vision/model={name}", *[f"vision.model.{o}" for o in overrides]]).vision.model


def build_encoders(cfg: DictConfig) -> FrozenEncoders:
    """The frozen encoders of ``cfg``; ``conditioning.space`` decides the image encoder's output and whether
    the text encoder carries CLIP's projection (:func:`~cxr_irgen.vision.conditioning.space_outputs`)."""
    uses_image = cfg.conditioning.mode != "text"
    space = cfg.conditioning.get("space")  # None in configs saved before spaces were named: their recorded encoder outputs
    text_token, image_output = space_outputs(space) if space else ("pooled", None)
    projected_text = cfg.conditioning.mode == "average" and text_token == "projected"
    image_encoder = build_clip_image_encoder(cfg.image_encoder, image_output) if uses_image else None
    text_encoder = build_text_encoder(cfg.text_encoder, projected=projected_text)
    if projected_text and text_encoder.model.config.projection_dim != text_encoder.hidden_size:
        raise UserError(f"conditioning.space=projected needs a CLIP text projection of width {text_encoder.hidden_size}, got {text_encoder.model.config.projection_dim}")
    return FrozenEncoders(text_encoder, image_encoder, build_vae(cfg.vae))


def build_backbone(cfg: DictConfig, cond_dim: int, num_tokens: int) -> nn.Module:
    """The backbone ``cfg.kind`` (a name registered in :mod:`~cxr_irgen.vision.backbones`) for conditions of width ``cond_dim``."""
    return VISION_BACKBONES.get(cfg.kind)(cfg, cond_dim, num_tokens)


def list_vision_models() -> list[str]:
    """The vision model names, one per YAML in ``configs/vision/model/`` (``unet-tiny``, ``unet-sd14``, ``uvit-l2``, ...)."""
    return [name for name in config_names(MODEL_CONFIGS) if name != SHARED_BASE]


def build_vision_model(name: str, **overrides) -> tuple[DictConfig, FrozenEncoders, VisionModel]:
    """Model ``name`` (a YAML in ``configs/vision/model/``, :func:`list_vision_models`) with ``overrides`` merged into
    its config (e.g. ``image_size=64``, ``conditioning={"mode": "text"}``): its config, frozen encoders and a fresh
    trainable part (pretrained weights where the config names them); the model maps (noisy latents (B, 4, h, w),
    steps (B,), features) → (B, 4, h, w)."""
    if name not in list_vision_models():
        raise UserError(f"vision/model={name!r}: use one of {', '.join(list_vision_models())}")
    cfg = OmegaConf.merge(vision_model_config(name), overrides)
    encoders = build_encoders(cfg)
    return cfg, encoders, build_trainable(cfg, encoders)


def build_trainable(cfg: DictConfig, encoders: FrozenEncoders) -> VisionModel:
    """A fresh trainable model for ``cfg`` (the ``vision/model`` config); the unconditional text
    features start from the encoded empty prompt."""
    conditioning = build_conditioning(cfg.conditioning, encoders.text_encoder.hidden_size, encoders.image_dim)
    conditioning.set_empty_prompt(encoders.text_encoder([""]))
    backbone = build_backbone(cfg.backbone, encoders.text_encoder.hidden_size, conditioning.num_tokens)
    return VisionModel(backbone, conditioning, BackboneTime(cfg.noise_schedule))


def build_noise_scheduler(cfg: DictConfig):
    """The training scheduler (adds noise at step n) over ``cfg.noise_schedule`` (:mod:`cxr_irgen.vision.schedules`)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_kwargs(plain(cfg.noise_schedule)), clip_sample=False)


def load_vision_model(model_dir: Path) -> tuple[DictConfig, FrozenEncoders, VisionModel]:
    """Rebuild a saved model (``<run_dir>/model``): its config, frozen encoders and trained weights."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_CONFIG).exists():
        raise UserError(f"{model_dir} is not a saved vision model: expected {MODEL_CONFIG}, {CONDITIONING_WEIGHTS} and {BACKBONE_DIR}/ (from cxr-irgen train-vision)")
    cfg = OmegaConf.load(model_dir / MODEL_CONFIG)
    encoders = build_encoders(cfg)
    conditioning = build_conditioning(cfg.conditioning, encoders.text_encoder.hidden_size, encoders.image_dim)
    conditioning.load_state_dict(load_file(str(model_dir / CONDITIONING_WEIGHTS)))
    backbone_cfg = OmegaConf.create({"kind": cfg.backbone.kind, "pretrained": str(model_dir / BACKBONE_DIR)})
    backbone = build_backbone(backbone_cfg, encoders.text_encoder.hidden_size, conditioning.num_tokens)
    return cfg, encoders, VisionModel(backbone, conditioning, BackboneTime(plain(cfg.noise_schedule)))
