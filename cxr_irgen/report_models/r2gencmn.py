"""R2GenCMN (Chen et al., ACL 2021): a Transformer whose visual and text inputs both query one cross-modal memory.

    visual tokens (B, N, C) ─► shared projection ─► x + CMN(x) ─► Transformer encoder ─► (B, N, d)
    tokens (B, T) ─► embedding + positions ─► y + CMN(y) ─► Transformer decoder (causal, cross-attends) ─► logits (B, T, V)

*Cross-modal memory* (:class:`CrossModalMemory`): a learned matrix M (slots × d; paper 2048 × 512). Per head, an
input vector's query is scored against every memory row's key (scaled dot product); only the ``top_k`` (32) best
rows are kept, and the softmax over their scores weights their values. The heads' responses are concatenated and
projected. The same memory and projections serve both modalities, which is what ties image and text together.

Paper configuration (``configs/report_models/decoder/r2gencmn.yaml``): d 512, FFN 512, 8 heads, 3 layers,
memory 2048 × 512, top-k 32; with ``encoder=resnet101``, ``projection_dropout=0.5`` and ``trainer=r2gen``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.decoder_base import TokenDecoder, causal_mask, register_report_decoder
from cxr_irgen.report_models.r2gen import sinusoidal_positions
from cxr_irgen.report_models.vocabulary import PAD


class CrossModalMemory(nn.Module):
    """Memory response of every input vector: x (B, L, d) → (B, L, d), from the ``top_k`` best-matching of ``slots`` rows."""

    def __init__(self, slots: int = 2048, d_model: int = 512, heads: int = 8, top_k: int = 32, dropout: float = 0.1):
        super().__init__()
        if d_model % heads:
            raise UserError(f"cross-modal memory: d_model={d_model} is not divisible by heads={heads}")
        self.heads, self.top_k = int(heads), min(int(top_k), int(slots))
        self.memory = nn.Parameter(torch.randn(slots, d_model) / d_model)  # R2GenCMN: normal(0, 1 / d)
        self.query, self.key, self.value, self.out = (nn.Linear(d_model, d_model) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        head_dim = d // self.heads
        queries = self.query(x).view(b, length, self.heads, head_dim).transpose(1, 2)  # (B, h, L, d/h)
        keys = self.key(self.memory).view(-1, self.heads, head_dim).transpose(0, 1)  # (h, S, d/h)
        values = self.value(self.memory).view(-1, self.heads, head_dim).transpose(0, 1)
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(head_dim)  # (B, h, L, S)
        best, rows = scores.topk(self.top_k, dim=-1)
        kept = torch.full_like(scores, float("-inf")).scatter(-1, rows, best)  # every row outside the top k weighs 0
        response = self.dropout(torch.softmax(kept, dim=-1)) @ values  # (B, h, L, d/h)
        return self.out(response.transpose(1, 2).reshape(b, length, d))


@register_report_decoder("r2gencmn")
class R2GenCMNDecoder(TokenDecoder):
    """R2GenCMN behind the decoder interface: ``logits(tokens (B, T), encoded (B, N, d)) -> (B, T, V)``.

    Pre-norm Transformer encoder and decoder (as R2Gen, without its relational memory); the projected visual
    tokens and the position-encoded word embeddings each get their cross-modal memory response added.
    """

    def __init__(self, vocab_size: int, max_positions: int, d_model: int = 512, ffn: int = 512, heads: int = 8, layers: int = 3,
                 memory_slots: int = 2048, top_k: int = 32, dropout: float = 0.1):
        super().__init__()
        self.d_model = int(d_model)
        encoder_layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        decoder_layer = nn.TransformerDecoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(decoder_layer, layers, norm=nn.LayerNorm(d_model))
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.register_buffer("positions", sinusoidal_positions(max_positions, d_model), persistent=False)
        self.embedding_dropout = nn.Dropout(dropout)
        self.memory = CrossModalMemory(memory_slots, d_model, heads, top_k, dropout)
        self.out = nn.Linear(d_model, vocab_size)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens (B, N, d) + their memory responses → encoded (B, N, d)."""
        return self.encoder(memory + self.memory(memory))

    def logits(self, tokens: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.positions.shape[0]:
            raise UserError(f"{tokens.shape[1]} tokens exceed the decoder's {self.positions.shape[0]} positions: lower max_length")
        x = self.embedding_dropout(self.embedding(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.shape[1]])
        x = x + self.memory(x)
        hidden = self.decoder(x, encoded, tgt_mask=causal_mask(tokens.shape[1], tokens.device), tgt_key_padding_mask=tokens == PAD)
        return self.out(hidden)
