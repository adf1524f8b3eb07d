"""Stage 2: a ViT prior mapping an image representation to the stage-1 report embedding.

Inputs (``input``), each turned into a token sequence before the transformer:

- ``clip``: the CLIP image embedding (B, D) is split into ``clip_tokens`` consecutive chunks
  of D / clip_tokens values; one shared linear layer embeds each chunk as a token (like ViT
  patches), and position embeddings tell the chunks apart.
- ``classifier``: the pooled features (B, C) of a frozen trained image encoder (a ``train-classifier`` DenseNet, or
  XRV's DenseNet-121; beyond the paper, docs/prior-input-classifier.md), split into ``clip_tokens`` tokens the same way.
- ``latent``: the VAE latent (B, 4, h, w), cut into ``patch_size``² patches by a strided conv.
- ``image``: the pixels (B, 1, S, S), patched the same way.

With ``labels`` (beyond the paper, docs/prior-label-tokens.md), the CheXpert label vector (B, 14) adds 14 tokens,
one learned embedding per label and state (positive, negative, uncertain, not mentioned); training drops the whole
vector (all "not mentioned") with probability ``label_dropout``, so the prior also writes from the image alone.

A learned ``[CLS]`` token is prepended; its final state (after the last LayerNorm) goes
through one linear layer to the embedding size. The output is unbounded (no tanh): BART's
pooled states are not confined to [-1, 1].

The transformer blocks are transformers' ``ViTLayer``s, so a pretrained ``ViTModel``
(hub id or directory, ``pretrained``) can supply the blocks, the final LayerNorm and the
``[CLS]`` token; the input embedding and the position embeddings are always trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.vision.loading import load_pretrained

PRIOR_INPUTS = ("clip", "latent", "image", "classifier")
VECTOR_INPUTS = ("clip", "classifier")  # (B, D) inputs, split into clip_tokens chunks
PRIOR_LOSSES = ("mse+cos", "mse", "cos")
PRIOR_FILE = "prior.json"
NUM_LABELS = 14
LABEL_STATES = (1.0, 0.0, -1.0)  # positive, negative, uncertain; anything else (NaN) is "not mentioned", state 3
WEIGHTS_FILE = "model.safetensors"


def prior_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "mse+cos", cos_weight: float = 0.01) -> torch.Tensor:
    """``mse`` ‖p − t‖² mean, ``cos`` mean(1 − cos(p, t)), or ``mse+cos`` = mse + cos_weight · cos; (B, d) each."""
    if kind not in PRIOR_LOSSES:
        raise UserError(f"prior.loss={kind!r}: use one of {', '.join(PRIOR_LOSSES)}")
    predicted, target = predicted.float(), target.float()
    mse = F.mse_loss(predicted, target)
    cos = (1.0 - F.cosine_similarity(predicted, target, dim=-1)).mean()
    if kind == "mse":
        return mse
    if kind == "cos":
        return cos
    return mse + cos_weight * cos


def _load_vit(source: str):
    """A pretrained ``ViTModel``; raises unless every transformer-block and final-norm weight was in the files."""
    from transformers import ViTModel

    vit, info = load_pretrained(ViTModel, str(source), None, "config.json and model.safetensors of a ViTModel", add_pooling_layer=False, output_loading_info=True)
    missing = sorted(k for k in info["missing_keys"] if k.startswith(("layers.", "layernorm.", "embeddings.cls_token")))
    if missing:
        raise UserError(f"prior.pretrained={source}: {len(missing)} ViT weights missing from the checkpoint (e.g. {missing[:2]}); not a ViTModel checkpoint?")
    return vit


class PriorViT(nn.Module):
    """Image representation → predicted report embedding (B, output_dim).

    Args:
        input: ``clip`` | ``latent`` | ``image`` | ``classifier``.
        input_shape: one sample's shape: (D,) for clip/classifier, (C, h, w) for latent/image.
        output_dim: stage-1 embedding size d.
        width, depth, heads, mlp_dim: transformer size (ignored with ``pretrained``, which sets them).
        patch_size: patch side for latent/image inputs.
        clip_tokens: number of tokens a clip/classifier vector is split into.
        pretrained: hub id or directory of a ``ViTModel`` whose blocks, final norm and [CLS] token are used.
        vit_config: a full ``ViTConfig`` dict (how a saved prior is rebuilt; overrides the size arguments).
        init_seed: seed of the random initialisation.
        labels: whether the CheXpert label vector (B, 14) adds 14 tokens (:meth:`forward`'s ``labels``).
    """

    def __init__(
        self,
        input: str,
        input_shape: tuple[int, ...],
        output_dim: int,
        width: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_dim: int = 1024,
        patch_size: int = 4,
        clip_tokens: int = 16,
        pretrained: str | None = None,
        vit_config: dict | None = None,
        init_seed: int = 0,
        labels: bool = False,
    ):
        super().__init__()
        from transformers import ViTConfig, ViTModel

        if input not in PRIOR_INPUTS:
            raise UserError(f"prior.input={input!r}: use one of {', '.join(PRIOR_INPUTS)}")
        self.input = input
        self.input_shape = tuple(int(s) for s in input_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            if pretrained:
                vit = _load_vit(pretrained)
            else:
                config = ViTConfig.from_dict(vit_config) if vit_config else ViTConfig(
                    hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=mlp_dim
                )
                vit = ViTModel(config, add_pooling_layer=False)
            self.width = int(vit.config.hidden_size)
            self.cls_token = vit.embeddings.cls_token
            self.blocks = vit.layers
            self.norm = vit.layernorm
            self.token_embedding, num_tokens = self._make_token_embedding(patch_size, clip_tokens)
            self.position_embedding = nn.Parameter(torch.randn(1, num_tokens + 1 + NUM_LABELS * bool(labels), self.width) * 0.02)
            self.head = nn.Linear(self.width, int(output_dim))
            self.label_embedding = nn.Embedding(NUM_LABELS * (len(LABEL_STATES) + 1), self.width) if labels else None
        self.settings = {
            "input": input, "input_shape": list(self.input_shape), "output_dim": int(output_dim),
            "patch_size": int(patch_size), "clip_tokens": int(clip_tokens), "vit_config": vit.config.to_dict(), "labels": bool(labels),
        }

    @property
    def reads_labels(self) -> bool:
        """Whether :meth:`forward` takes the label vector."""
        return self.label_embedding is not None

    def _make_token_embedding(self, patch_size: int, clip_tokens: int) -> tuple[nn.Module, int]:
        if self.input in VECTOR_INPUTS:
            (dim,) = self.input_shape
            if dim % clip_tokens:
                raise UserError(f"prior.clip_tokens={clip_tokens} must divide the {self.input} feature size {dim}")
            self.chunk = dim // clip_tokens
            return nn.Linear(self.chunk, self.width), clip_tokens
        channels, height, width = self.input_shape
        if height % patch_size or width % patch_size:
            raise UserError(f"prior.patch_size={patch_size} must divide the {self.input} size {height}x{width}")
        return nn.Conv2d(channels, self.width, kernel_size=patch_size, stride=patch_size), (height // patch_size) * (width // patch_size)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Input (B, *input_shape) → tokens (B, N, width)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"prior expects {self.input} inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}: wrong prior for this encoder?")
        if self.input in VECTOR_INPUTS:
            return self.token_embedding(x.reshape(x.shape[0], -1, self.chunk))
        return self.token_embedding(x).flatten(2).transpose(1, 2)

    def label_tokens(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Label vectors (B, 14) of 1 / 0 / −1 / NaN (None: all not mentioned) → tokens (B, 14, width)."""
        states = torch.full((batch, NUM_LABELS), len(LABEL_STATES), dtype=torch.long, device=self.head.weight.device)
        if labels is not None:
            if tuple(labels.shape) != (batch, NUM_LABELS):
                raise UserError(f"the prior takes one CheXpert label vector (14 values) per image, got shape {tuple(labels.shape)} for {batch} images")
            labels = labels.to(states.device)
            for state, value in enumerate(LABEL_STATES):
                states[labels == value] = state
        offsets = torch.arange(NUM_LABELS, device=states.device) * (len(LABEL_STATES) + 1)
        return self.label_embedding(states + offsets)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *input_shape), labels (B, 14) or None (only for a prior that :attr:`reads_labels`) → (B, output_dim)."""
        if labels is not None and not self.reads_labels:
            raise UserError("this prior was trained without label tokens (prior.labels=false): it takes no label vectors")
        tokens = self.tokens(x.to(self.head.weight.dtype))
        if self.reads_labels:
            tokens = torch.cat([tokens, self.label_tokens(labels, tokens.shape[0]).to(tokens.dtype)], dim=1)
        hidden = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.position_embedding
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(self.norm(hidden[:, 0]))

    def save_pretrained(self, directory: str | Path) -> Path:
        """``prior.json`` (constructor arguments) + ``model.safetensors``."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_FILE))
        (directory / PRIOR_FILE).write_text(json.dumps(self.settings, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PriorViT":
        from safetensors.torch import load_model

        directory = Path(directory)
        if not (directory / PRIOR_FILE).exists():
            raise UserError(f"{directory} holds no prior ({PRIOR_FILE} missing): pass the run dir of `cxr-irgen train-language stage=prior`")
        settings = json.loads((directory / PRIOR_FILE).read_text())
        prior = cls(**settings)
        load_model(prior, str(directory / WEIGHTS_FILE))
        return prior


def build_prior(prior_cfg, input_shape: tuple[int, ...], output_dim: int) -> PriorViT:
    """A :class:`PriorViT` from ``configs/language/prior/*.yaml``."""
    return PriorViT(
        input=str(prior_cfg.input),
        input_shape=input_shape,
        output_dim=output_dim,
        width=int(prior_cfg.width),
        depth=int(prior_cfg.depth),
        heads=int(prior_cfg.heads),
        mlp_dim=int(prior_cfg.mlp_dim),
        patch_size=int(prior_cfg.patch_size),
        clip_tokens=int(prior_cfg.clip_tokens),
        pretrained=prior_cfg.get("pretrained"),
        init_seed=int(prior_cfg.get("init_seed", 0)),
        labels=bool(prior_cfg.get("labels", False)),
    )
