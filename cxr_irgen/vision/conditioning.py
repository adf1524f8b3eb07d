"""Condition tokens for the diffusion backbone from CLIP text and reference-image features.

Inputs (a dict, as produced by the frozen encoders or read from the feature cache):
``text_hidden`` (B, 77, Dt), ``text_pooled`` (B, Dt), ``text_embeds`` (B, Dt; CLIP-projected text,
only from a text encoder with CLIP's projection), ``image_embeds`` (B, Di).

Modes (output (B, L, Dt)):
- ``text``: the text tokens only; ``text_tokens: sequence`` (L = 77) or ``pooled`` (L = 1).
- ``concat``: text tokens followed by the reference-image token along the sequence
  (L = 77 + 1; the paper's U-Net setting).
- ``average``: one token, the mean of a pooled text embedding and the image embedding (the
  paper's U-ViT setting).

Spaces (``space``): which CLIP outputs the single text token and the image token are:
- ``projected``: CLIP's projected text embedding and projected image embedding, the same joint
  space (needs a text encoder with CLIP's projection);
- ``pooled``: the text ``pooler_output`` and the vision transformer's ``pooler_output``, both
  unprojected, as the released code (which averaged the two for its U-ViT);
- ``mixed``: the unprojected text ``pooler_output`` with the projected image embedding (two
  different spaces; what this library did before the spaces were named).
For ``concat`` the text stays the 77 hidden states; the space picks the image token.
Each input has an optional learned linear projection (forced for the image when Di ≠ Dt).

Condition dropout: during training each sample's features are replaced, with probability
``dropout``, by the unconditional features (``unconditional: learned`` parameters or ``empty``
fixed buffers, both initialised from the encoded empty prompt and a zero image embedding), so
classifier-free guidance has a trained unconditional branch (the released code had none:
:func:`guidance_warning`).
"""

from __future__ import annotations

import torch
from torch import nn

from cxr_irgen.errors import UserError

MODES = ("text", "concat", "average")
SPACES = ("projected", "pooled", "mixed")
TEXT_TOKENS = ("sequence", "pooled", "projected")
CLIP_CONTEXT = 77


def space_outputs(space: str) -> tuple[str, str]:
    """(text token kind of a one-token text, image encoder output) of a conditioning space."""
    if space not in SPACES:
        raise UserError(f"conditioning.space={space!r}: use one of {', '.join(SPACES)}")
    return {"projected": ("projected", "projected"), "pooled": ("pooled", "pooled"), "mixed": ("pooled", "projected")}[space]


def guidance_warning(dropout: float, guidance: float) -> str | None:
    """The warning for classifier-free guidance on a model trained without condition dropout (None when fine)."""
    if float(dropout) > 0 or float(guidance) == 1.0:
        return None
    return (f"classifier-free guidance {guidance} on a model trained with conditioning.dropout=0 (as the released code): "
            "its unconditional branch was never trained, so guidance extrapolates from an untrained prediction")


class Conditioning(nn.Module):
    def __init__(
        self,
        mode: str,
        text_dim: int,
        image_dim: int,
        text_tokens: str = "sequence",
        project_text: bool = False,
        project_image: bool = False,
        dropout: float = 0.1,
        unconditional: str = "learned",
    ):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"conditioning.mode={mode!r}: use one of {', '.join(MODES)}")
        if text_tokens not in TEXT_TOKENS:
            raise UserError(f"conditioning.text_tokens={text_tokens!r}: use one of {', '.join(TEXT_TOKENS)}")
        if unconditional not in ("learned", "empty"):
            raise UserError(f"conditioning.unconditional={unconditional!r}: use learned or empty")
        self.mode, self.dropout = mode, float(dropout)
        self.text_tokens = "pooled" if mode == "average" and text_tokens == "sequence" else text_tokens  # average needs one text token
        self.uses_image = mode != "text"
        self.text_proj = nn.Linear(text_dim, text_dim) if project_text else nn.Identity()
        self.image_proj = nn.Linear(image_dim, text_dim) if self.uses_image and (project_image or image_dim != text_dim) else nn.Identity()
        self.null_keys = [self.text_key] + (["image_embeds"] if self.uses_image else [])
        shapes = {"text_hidden": (CLIP_CONTEXT, text_dim), "text_pooled": (text_dim,), "text_embeds": (text_dim,), "image_embeds": (image_dim,)}
        for key in self.null_keys:
            tensor = torch.zeros(shapes[key])
            if unconditional == "learned":
                self.register_parameter(f"null_{key}", nn.Parameter(tensor))
            else:
                self.register_buffer(f"null_{key}", tensor)

    @property
    def text_key(self) -> str:
        return {"sequence": "text_hidden", "pooled": "text_pooled", "projected": "text_embeds"}[self.text_tokens]

    @property
    def num_tokens(self) -> int:
        """L, the condition sequence length."""
        text = CLIP_CONTEXT if self.text_tokens == "sequence" else 1
        return {"text": text, "concat": text + 1, "average": 1}[self.mode]

    @torch.no_grad()
    def set_empty_prompt(self, empty: dict[str, torch.Tensor]) -> None:
        """Initialise the unconditional text features from the encoded empty prompt ``""`` (batch of 1)."""
        getattr(self, f"null_{self.text_key}").copy_(empty[self.text_key][0])

    def null_features(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"null_{key}").unsqueeze(0).expand(batch_size, *getattr(self, f"null_{key}").shape) for key in self.null_keys}

    def drop(self, features: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Replace the features of samples where ``mask`` (B,) is True by the unconditional ones."""
        null = self.null_features(mask.shape[0])
        out = {}
        for key in self.null_keys:
            shape = (-1,) + (1,) * (features[key].dim() - 1)
            out[key] = torch.where(mask.view(shape), null[key].to(features[key].dtype), features[key])
        return out

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features → condition (B, L, Dt); applies condition dropout in training mode."""
        if self.training and self.dropout > 0:
            batch = features[self.text_key].shape[0]
            mask = torch.rand(batch, device=features[self.text_key].device) < self.dropout
            features = self.drop(features, mask)
        return self.tokens(features)

    def tokens(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        text = self.text_proj(features[self.text_key])
        if self.text_tokens != "sequence":
            text = text.unsqueeze(1)
        if self.mode == "text":
            return text
        image = self.image_proj(features["image_embeds"]).unsqueeze(1)
        if self.mode == "concat":
            return torch.cat([text, image], dim=1)
        return (text + image) / 2

    def unconditional(self, batch_size: int) -> torch.Tensor:
        """The unconditional condition (B, L, Dt) used by classifier-free guidance."""
        return self.tokens(self.null_features(batch_size))


def build_conditioning(cfg, text_dim: int, image_dim: int) -> Conditioning:
    """``cfg``: mode, space, text_tokens, project_text, project_image, dropout, unconditional.

    ``average`` takes its one text token from ``space`` (projected → ``text_embeds``, pooled/mixed → ``text_pooled``;
    configs saved before spaces were named have none and keep ``text_pooled``).
    """
    text_tokens = cfg.get("text_tokens", "sequence")
    if cfg.mode == "average":
        text_tokens = space_outputs(cfg.space)[0] if cfg.get("space") else "pooled"
    return Conditioning(
        mode=cfg.mode,
        text_dim=text_dim,
        image_dim=image_dim,
        text_tokens=text_tokens,
        project_text=bool(cfg.get("project_text", False)),
        project_image=bool(cfg.get("project_image", False)),
        dropout=float(cfg.get("dropout", 0.1)),
        unconditional=cfg.get("unconditional", "learned"),
    )
