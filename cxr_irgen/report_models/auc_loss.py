"""The AUC-margin (AUC-M) loss of deep AUC maximisation (Yuan et al., ICCV 2021), multi-label.

For one label with positive ratio ``p`` (the training set's), scores ``h = sigmoid(logit)`` in
[0, 1] and margin ``m`` (1.0 in the paper), the min-max objective over a batch is

    F(w, a, b; α) = (1-p)·mean[(h-a)²·1(y=1)] + p·mean[(h-b)²·1(y=0)]
                    + 2α·(p(1-p)·m + mean[p·h·1(y=0) - (1-p)·h·1(y=1)]) - p(1-p)·α²

minimised over the network ``w`` and the class means ``a``, ``b``, maximised over ``α ≥ 0``
(the means are over the whole batch; the loss is averaged over the labels). This is the
``v1`` objective of ``libauc.losses.AUCMLoss``, which the tests use as the reference.

``a``, ``b`` and ``α`` are parameters of this module (saved and resumed with the model). ``a``
starts at 1 and ``b`` at 0, the class means of a scorer that meets margin 1 (LibAUC starts both
at 0: from a randomly initialised network that drives every score towards 0, where the sigmoid
saturates; on 64 px phantoms the coarse classifier then stayed at AUROC 0.47 for 300 steps). The
shared trainer's optimizer descends on every parameter; α ascends because its gradient is
reversed (:class:`_Ascend`), and it is projected onto α ≥ 0 before each use: a primal-dual
stochastic gradient method like LibAUC's PESG without its epoch-level reference decay.

    loss_fn = AUCMarginLoss(prior=targets.mean(0), margin=1.0)
    loss = loss_fn(logits, targets)               # logits, targets: (B, L)
"""

from __future__ import annotations

import torch
from torch import nn


class _Ascend(torch.autograd.Function):
    """Identity whose gradient is negated: a descent step on its input is an ascent step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class AUCMarginLoss(nn.Module):
    """AUC-M over L labels: ``prior`` (L,) = positive ratio per label in the training set."""

    def __init__(self, prior: torch.Tensor, margin: float = 1.0):
        super().__init__()
        prior = torch.as_tensor(prior, dtype=torch.float32).flatten()
        self.register_buffer("prior", prior, persistent=False)
        self.margin = float(margin)
        self.a = nn.Parameter(torch.ones_like(prior))
        self.b = nn.Parameter(torch.zeros_like(prior))
        self.alpha = nn.Parameter(torch.zeros_like(prior))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, L) and ``targets`` (B, L) in {0, 1} → scalar."""
        with torch.no_grad():
            self.alpha.clamp_(min=0.0)
        h, p = torch.sigmoid(logits.float()), self.prior
        pos, neg = (targets == 1).float(), (targets == 0).float()
        alpha = _Ascend.apply(self.alpha)
        loss = ((1 - p) * ((h - self.a) ** 2 * pos).mean(0) + p * ((h - self.b) ** 2 * neg).mean(0)
                + 2 * alpha * (p * (1 - p) * self.margin + (p * h * neg - (1 - p) * h * pos).mean(0))
                - p * (1 - p) * alpha ** 2)
        return loss.mean()
