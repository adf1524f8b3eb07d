"""The visual projection every decoder reads through (ifcc): Linear → d_model, ReLU, dropout, LayerNorm."""

from __future__ import annotations

import torch
from torch import nn


class VisualProjection(nn.Module):
    """Visual tokens (B, N, C) → (B, N, d_model)."""

    def __init__(self, in_dim: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.linear = nn.Linear(int(in_dim), int(d_model))
        self.dropout = nn.Dropout(float(dropout))
        self.norm = nn.LayerNorm(int(d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(torch.relu(self.linear(tokens))))
