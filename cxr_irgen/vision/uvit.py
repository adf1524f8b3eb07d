"""U-ViT (Bao et al., CVPR 2023, "All are worth words"): a ViT over latent patches.

Tokens are ``[condition tokens (k), time token, patch tokens (h/p · w/p)]`` plus a learned
position embedding; ``depth // 2`` shallow blocks, a mid block and ``depth // 2`` deep blocks,
deep block ``i`` fusing the output of shallow block ``depth // 2 - 1 - i`` by concatenation and a
linear layer (long skips). The patch tokens are projected back to patches, unpatchified and
smoothed by a 3×3 convolution. The condition (B, k, cond_dim) enters through a trainable
``Linear(cond_dim → width)``.

Loading the official ImageNet-256 latent U-ViT-L/2 checkpoint (``imagenet256_uvit_large.pth``,
github.com/baofff/U-ViT; patch 2, width 1024, depth 20, heads 16, no qkv bias, no time MLP) uses
:data:`OFFICIAL_KEY_MAP` (official prefix → ours; block internals keep their names):

    patch_embed.proj.*  → patch_embed.*        in_blocks.i.*   → down_blocks.i.*
    mid_block.*         → mid_block.*          out_blocks.i.*  → up_blocks.i.*
    norm.*              → norm_out.*           decoder_pred.*  → proj_out.*
    final_layer.*       → conv_out.*           pos_embed       → pos_embed (see below)

``label_emb.weight`` (1001 ImageNet classes) is dropped; the official token order is
``[label, time, patches]``, so the label position's embedding initialises every condition-token
position and ``condition_proj`` (new) is freshly initialised, as in the CXR-IRGen release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import BaseOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

from cxr_irgen.errors import UserError
from cxr_irgen.vision.backbones import BACKBONE_WEIGHTS, register_vision_backbone
from cxr_irgen.vision.loading import load_pretrained, plain, seeded_init

OFFICIAL_KEY_MAP = {
    "patch_embed.proj.": "patch_embed.",
    "in_blocks.": "down_blocks.",
    "mid_block.": "mid_block.",
    "out_blocks.": "up_blocks.",
    "norm.": "norm_out.",
    "decoder_pred.": "proj_out.",
    "final_layer.": "conv_out.",
    "time_embed.": "time_embed.",
}
OFFICIAL_DROPPED = ("label_emb.weight",)
UVIT_L2_IMAGENET256 = dict(sample_size=32, patch_size=2, in_channels=4, width=1024, depth=20, num_heads=16, mlp_ratio=4.0, qkv_bias=False, time_mlp=False)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim), ``[cos, sin]`` order as in the official U-ViT."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) → (B, L, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with ``skip``, first fuses a long-skip input: ``Linear(cat(x, skip))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@dataclass
class UViTOutput(BaseOutput):
    sample: torch.Tensor


class UViT(ModelMixin, ConfigMixin):
    """Noise predictor ``(latents (B, C, H, W), timesteps (B,), condition (B, k, cond_dim)) → (B, C, H, W)``.

    Called like diffusers' UNet2DConditionModel: ``model(sample, timestep, encoder_hidden_states).sample``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        width: int = 1024,
        depth: int = 20,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        time_mlp: bool = False,
        cond_dim: int = 768,
        num_condition_tokens: int = 1,
    ):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.time_embed = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width)) if time_mlp else nn.Identity()
        self.condition_proj = nn.Linear(cond_dim, width)
        num_patches = (sample_size // patch_size) ** 2
        self.num_extra_tokens = num_condition_tokens + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra_tokens + num_patches, width))
        self.down_blocks = nn.ModuleList([Block(width, num_heads, mlp_ratio, qkv_bias) for _ in range(depth // 2)])
        self.mid_block = Block(width, num_heads, mlp_ratio, qkv_bias)
        self.up_blocks = nn.ModuleList([Block(width, num_heads, mlp_ratio, qkv_bias, skip=True) for _ in range(depth // 2)])
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, patch_size**2 * in_channels)
        self.conv_out = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _block(self, block: Block, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, x, skip)
        return block(x, skip)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor, return_dict: bool = True):
        b, c, h, w = sample.shape
        p, width = self.config.patch_size, self.config.width
        if encoder_hidden_states.shape[1] != self.config.num_condition_tokens:
            raise ValueError(f"UViT expects {self.config.num_condition_tokens} condition token(s), got {tuple(encoder_hidden_states.shape)}")
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        patches = self.patch_embed(sample).flatten(2).transpose(1, 2)
        time_token = self.time_embed(timestep_embedding(timesteps, width).to(patches.dtype)).unsqueeze(1)
        condition = self.condition_proj(encoder_hidden_states.to(patches.dtype))
        x = torch.cat([condition, time_token, patches], dim=1) + self.pos_embed
        skips = []
        for block in self.down_blocks:
            x = self._block(block, x)
            skips.append(x)
        x = self._block(self.mid_block, x)
        for block in self.up_blocks:
            x = self._block(block, x, skips.pop())
        x = self.proj_out(self.norm_out(x))[:, self.num_extra_tokens :]
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        out = self.conv_out(x)
        return UViTOutput(sample=out) if return_dict else (out,)

    @classmethod
    def convert_official_state_dict(cls, official: dict[str, torch.Tensor], num_condition_tokens: int = 1) -> dict[str, torch.Tensor]:
        """Rename official U-ViT keys to ours (:data:`OFFICIAL_KEY_MAP`), drop the class embedding and
        expand the label position of ``pos_embed`` to ``num_condition_tokens`` positions."""
        converted = {}
        for key, value in official.items():
            if key in OFFICIAL_DROPPED:
                continue
            if key == "pos_embed":
                condition_pos = value[:, :1].expand(-1, num_condition_tokens, -1)
                converted[key] = torch.cat([condition_pos, value[:, 1:]], dim=1).contiguous()
                continue
            prefix = next((p for p in OFFICIAL_KEY_MAP if key.startswith(p)), None)
            if prefix is None:
                raise UserError(f"unexpected key {key!r} in U-ViT checkpoint: is this the official ImageNet-256 latent U-ViT (libs/uvit.py)?")
            converted[OFFICIAL_KEY_MAP[prefix] + key[len(prefix) :]] = value
        return converted

    @classmethod
    def from_uvit_checkpoint(cls, path: str | Path, cond_dim: int = 768, num_condition_tokens: int = 1, **overrides) -> "UViT":
        """The official ImageNet-256 latent U-ViT-L/2 ``.pth`` with a fresh ``condition_proj`` (cond_dim → 1024)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"U-ViT checkpoint not found: place imagenet256_uvit_large.pth (github.com/baofff/U-ViT) at {path}")
        official = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**{**UVIT_L2_IMAGENET256, **overrides}, cond_dim=cond_dim, num_condition_tokens=num_condition_tokens)
        state = cls.convert_official_state_dict(official, num_condition_tokens)
        missing, unexpected = model.load_state_dict(state, strict=False)
        new = {"condition_proj.weight", "condition_proj.bias"}
        if set(missing) - new or unexpected:
            raise UserError(f"{path} does not match U-ViT-L/2 (missing {sorted(set(missing) - new)[:3]}, unexpected {unexpected[:3]})")
        return model


@register_vision_backbone("uvit")
def build_uvit(cfg, cond_dim: int, num_tokens: int) -> UViT:
    """``checkpoint`` (official U-ViT .pth), ``pretrained`` (a saved dir) or a seeded random init from ``config``."""
    if cfg.get("checkpoint"):
        return UViT.from_uvit_checkpoint(cfg.checkpoint, cond_dim=cond_dim, num_condition_tokens=num_tokens)
    if cfg.get("pretrained"):
        return load_pretrained(UViT, cfg.pretrained, cfg.get("subfolder"), f"config.json and {BACKBONE_WEIGHTS}")
    return seeded_init(lambda: UViT(**plain(cfg.config), cond_dim=cond_dim, num_condition_tokens=num_tokens), cfg.get("init_seed", 0))
