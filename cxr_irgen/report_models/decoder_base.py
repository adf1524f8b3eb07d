"""What every report decoder shares: the next-word loss, the causal mask, word embeddings, the
:class:`TokenDecoder` base and the decoder registry (``@register_report_decoder("name")``).

A decoder YAML under ``configs/report_models/decoder/`` names its class in ``builder``; the classes
register here when their modules (:mod:`~cxr_irgen.report_models.decoders`, ``r2gen``, ``r2gencmn``) are imported.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.beam_search import BeamSettings, beam_search
from cxr_irgen.report_models.vocabulary import PAD
from cxr_irgen.utils.registry import Registry

DECODER_BUILDERS = Registry("report decoder builder")
register_report_decoder = DECODER_BUILDERS.register


def next_word_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, T-1, V) for inputs ``targets[:, :-1]`` against ``targets[:, 1:]``, padding ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets[:, 1:].flatten(), ignore_index=PAD)


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True above the diagonal (future positions hidden)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


class WordEmbedding(nn.Module):
    """Word ids (B, T) → scaled embeddings + learned positions (B, T, d)."""

    def __init__(self, vocab_size: int, d_model: int, max_positions: int, dropout: float):
        super().__init__()
        self.words = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.positions = nn.Embedding(max_positions, d_model)
        self.dropout = nn.Dropout(dropout)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.positions.num_embeddings:
            raise UserError(f"{tokens.shape[1]} tokens exceed the decoder's {self.positions.num_embeddings} positions: lower max_length")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.words(tokens) * self.scale + self.positions(positions))


class TokenDecoder(nn.Module):
    """Decoders that score every next word from the whole prefix: subclasses give ``prepare`` and ``logits``."""

    def prepare(self, memory: torch.Tensor) -> Any:
        """What :meth:`logits` reads besides the tokens (tensors with batch first); the memory itself by default."""
        return memory

    def logits(self, tokens: torch.Tensor, context: Any) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, memory: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return next_word_loss(self.logits(targets[:, :-1], self.prepare(memory)), targets)

    def generate(self, memory: torch.Tensor, settings: BeamSettings) -> list[list[int]]:
        def step(tokens, context):
            return torch.log_softmax(self.logits(tokens, context)[:, -1].float(), dim=-1), context

        return beam_search(step, self.prepare(memory), memory.shape[0], settings, memory.device)
