"""R2Gen (Chen et al., EMNLP 2020): a Transformer whose decoder layer norms are driven by a relational memory.

    visual tokens (B, N, C) ─► shared projection (Linear C→d, ReLU, dropout) ─► Transformer encoder ─► (B, N, d)
    tokens (B, T) ─► embedding ─► relational memory, one update per token ─► (B, T, slots, d)
                                       │
    decoder layers (self-attn, cross-attn, FFN), each sublayer pre-normed by MCLN(x, memory_t)
                                       └─► logits (B, T, V)

*Relational memory*: ``slots`` rows of width ``d``, initialised to the identity (padded
with zeros). At each token the rows attend over [memory; token] (multi-head), add an MLP
of the result, and are gated like an LSTM: ``M' = σ(i) ⊙ tanh(M̃) + σ(f) ⊙ M`` with
``[i, f] = W x + U tanh(M)``.

*Memory-driven conditional layer norm (MCLN)*: layer norm whose γ and β are shifted by
MLPs of the flattened memory at that position, so the same hidden state is normed
differently when the memory differs.

Paper configuration (``configs/report_models/decoder/r2gen.yaml``): d 512, d_ff 512, 8 heads,
3 layers, 3 slots, dropout 0.1; projection dropout 0.5 (``projection_dropout`` of the run).
:class:`R2GenDecoder` plugs it into the encoder × decoder registry (``decoder=r2gen``) with a
ResNet-101 grid encoder (``encoder=resnet101``), so training, beam search and the saved
generator are the shared ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.decoder_base import TokenDecoder, causal_mask, register_report_decoder
from cxr_irgen.report_models.vocabulary import PAD


class RelationalMemory(nn.Module):
    """``slots`` × ``d_model`` memory updated once per input token: (B, T, d) → (B, T, slots, d)."""

    def __init__(self, num_slots: int = 3, d_model: int = 512, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.num_slots, self.d_model = num_slots, d_model
        self.attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU())
        self.input_gates = nn.Linear(d_model, 2 * d_model)  # W: input and forget gate from the token
        self.memory_gates = nn.Linear(d_model, 2 * d_model)  # U: input and forget gate from tanh(memory)

    def initial_memory(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """(B, slots, d): the identity in the first ``min(slots, d)`` columns, zeros elsewhere."""
        eye = torch.eye(self.num_slots, self.d_model, device=device, dtype=dtype)
        return eye.expand(batch_size, -1, -1).clone()

    def step(self, token: torch.Tensor, memory: torch.Tensor, token_gates: torch.Tensor | None = None) -> torch.Tensor:
        """One update: token (B, d), memory (B, slots, d) → next memory (B, slots, d); ``token_gates`` = W token, if precomputed."""
        keys = torch.cat([memory, token.unsqueeze(1)], dim=1)  # (B, slots + 1, d)
        attended = memory + self.attention(memory, keys, keys, need_weights=False)[0]
        candidate = attended + self.mlp(attended)
        token_gates = self.input_gates(token) if token_gates is None else token_gates
        input_gate, forget_gate = (token_gates.unsqueeze(1) + self.memory_gates(torch.tanh(memory))).chunk(2, dim=-1)
        return torch.sigmoid(input_gate) * torch.tanh(candidate) + torch.sigmoid(forget_gate) * memory

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Memory after each token: tokens (B, T, d) → (B, T, slots, d); starts from ``memory`` or the identity."""
        if memory is None:
            memory = self.initial_memory(tokens.shape[0], tokens.device, tokens.dtype)
        token_gates = self.input_gates(tokens)  # (B, T, 2d) in one product instead of one per step
        states = []
        for t in range(tokens.shape[1]):
            memory = self.step(tokens[:, t], memory, token_gates[:, t])
            states.append(memory)
        return torch.stack(states, dim=1)


class ConditionalLayerNorm(nn.Module):
    """MCLN: x (B, T, d), memory (B, T, slots, d) → layer norm of x with γ + Δγ(memory), β + Δβ(memory)."""

    def __init__(self, d_model: int, num_slots: int, memory_dim: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d_model))
        self.beta = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.delta_gamma = nn.Sequential(nn.Linear(num_slots * memory_dim, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.delta_beta = nn.Sequential(nn.Linear(num_slots * memory_dim, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.1)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        flat = memory.flatten(-2)  # (B, T, slots * d)
        normed = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return (self.gamma + self.delta_gamma(flat)) * normed + self.beta + self.delta_beta(flat)


class R2GenDecoderLayer(nn.Module):
    """Pre-norm decoder layer whose three norms are MCLNs of the per-position memory."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float, num_slots: int):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norms = nn.ModuleList(ConditionalLayerNorm(d_model, num_slots, d_model) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, visual, memory, causal_mask, padding_mask=None):
        h = self.norms[0](x, memory)
        x = x + self.dropout(self.self_attention(h, h, h, attn_mask=causal_mask, key_padding_mask=padding_mask, need_weights=False)[0])
        h = self.norms[1](x, memory)
        x = x + self.dropout(self.cross_attention(h, visual, visual, need_weights=False)[0])
        return x + self.dropout(self.feed_forward(self.norms[2](x, memory)))


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) sine/cosine position table of the original Transformer."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


@register_report_decoder("r2gen")
class R2GenDecoder(TokenDecoder):
    """R2Gen behind the decoder interface: projected visual memory (B, N, d) → Transformer encoder → RM + MCLN decoder.

    ``logits(tokens (B, T), encoded (B, N, d)) -> (B, T, V)``; ``loss`` and ``generate`` (the shared
    beam search) come from :class:`TokenDecoder`. ``max_positions`` = longest report + 2.
    """

    def __init__(self, vocab_size: int, max_positions: int, d_model: int = 512, ffn: int = 512, heads: int = 8,
                 layers: int = 3, memory_slots: int = 3, memory_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.d_model = int(d_model)
        encoder_layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(encoder_layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.register_buffer("positions", sinusoidal_positions(max_positions, d_model), persistent=False)
        self.embedding_dropout = nn.Dropout(dropout)
        self.memory = RelationalMemory(memory_slots, d_model, memory_heads, dropout)
        self.layers = nn.ModuleList(R2GenDecoderLayer(d_model, heads, ffn, dropout, memory_slots) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens (B, N, d) → encoded (B, N, d)."""
        return self.encoder(memory)

    def logits(self, tokens: torch.Tensor, encoded: torch.Tensor, initial_memory: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, T) with BOS first → logits (B, T, V); ``initial_memory`` (B, slots, d) replaces the identity start."""
        if tokens.shape[1] > self.positions.shape[0]:
            raise UserError(f"{tokens.shape[1]} tokens exceed the decoder's {self.positions.shape[0]} positions: lower max_length")
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.shape[1]]
        x = self.embedding_dropout(x)
        states = self.memory(x, initial_memory)  # (B, T, slots, d): R2Gen feeds the position-encoded embeddings
        causal = causal_mask(tokens.shape[1], tokens.device)
        padding = tokens == PAD
        for layer in self.layers:
            x = layer(x, encoded, states, causal, padding)
        return self.out(self.final_norm(x))
