"""Image ↔ latent codecs: Stable Diffusion's frozen VAE, or a fixed invertible pixel-unshuffle codec.

Both map images (B, 1, H, W) in [0, 1] to latents (B, 4, H/f, W/f) ready for the diffusion
backbone (already scaled) and back. ``kind: sd`` is AutoencoderKL (f = 8, scale 0.18215,
gray → RGB in [-1, 1]); ``kind: unshuffle`` is for tiny test configs (f = ``factor``, 2 by default:
(B, 4, H/2, W/2); 4 gives (B, 16, H/4, W/4), so a 64 px image costs the backbone what a 32 px one does
at f = 2): a random VAE's decoder does not invert its encoder, so it cannot serve learning tests,
while this codec is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.vision.loading import freeze, load_pretrained, plain, seeded_init


class StableDiffusionVae(nn.Module):
    """Frozen AutoencoderKL; ``encode`` returns the scaled posterior mean (or a sample), ``decode`` a gray image."""

    latent_channels = 4

    def __init__(self, vae, sample: bool = False):
        super().__init__()
        self.vae = freeze(vae)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.sample = sample

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, 4, H/8, W/8) scaled latents."""
        rgb = (images * 2 - 1).expand(-1, 3, -1, -1).to(self.vae.dtype)
        posterior = self.vae.encode(rgb).latent_dist
        latents = posterior.sample() if self.sample else posterior.mean
        return latents.float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) scaled latents → (B, 1, 8h, 8w) in [0, 1]."""
        rgb = self.vae.decode((latents / self.scaling_factor).to(self.vae.dtype)).sample.float()
        return ((rgb.mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1)

    def train(self, mode: bool = True):
        return super().train(False)


class UnshuffleCodec(nn.Module):
    """Fixed invertible codec: pixel-unshuffle by ``factor`` f to f² channels, then ``(x - shift) * scale``."""

    def __init__(self, shift: float = 0.5, scale: float = 4.0, factor: int = 2):
        super().__init__()
        self.shift, self.scale = float(shift), float(scale)
        self.downscale, self.latent_channels = int(factor), int(factor) ** 2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → (B, f², H/f, W/f)."""
        return (F.pixel_unshuffle(images.float(), self.downscale) - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, f², h, w) → (B, 1, f·h, f·w) in [0, 1]."""
        return F.pixel_shuffle(latents.float() / self.scale + self.shift, self.downscale).clamp(0, 1)


def build_vae(cfg) -> StableDiffusionVae | UnshuffleCodec:
    """``cfg.kind``: ``sd`` (pretrained hub id/dir + subfolder vae, or random from ``config``) or ``unshuffle``."""
    if cfg.kind == "unshuffle":
        return UnshuffleCodec(cfg.get("shift", 0.5), cfg.get("scale", 4.0), cfg.get("factor", 2))
    if cfg.kind != "sd":
        raise UserError(f"vae.kind={cfg.kind!r}: use sd or unshuffle")
    from diffusers import AutoencoderKL

    if cfg.get("pretrained"):
        vae = load_pretrained(AutoencoderKL, cfg.pretrained, cfg.get("subfolder"), "config.json and diffusion_pytorch_model.safetensors")
    else:
        vae = seeded_init(lambda: AutoencoderKL(**plain(cfg.config)), cfg.get("init_seed", 0))
    return StableDiffusionVae(vae, sample=bool(cfg.get("sample", False)))
