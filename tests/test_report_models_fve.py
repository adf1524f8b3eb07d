"""FVE classifier training: the AUC-margin loss (hand-computed case, LibAUC as the reference, it raises AUROC)
and model selection with early stopping (per-part best weights, patience, resume from the run dir)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cxr_irgen.report_models.auc_loss import AUCMarginLoss
from cxr_irgen.report_models.encoder_train import Selection


def test_auc_margin_loss_matches_a_hand_computed_case():
    # one label, a positive scored 0.75 and a negative 0.25, p = 0.5, a = 0.5, b = 0.25, alpha = 0.5, m = 1:
    # (1-p)(0.0625/2) + p(0/2) + 2·0.5·(0.25 + (0.5·0.25 - 0.5·0.75)/2) - 0.25·0.25 = 0.015625 + 0.125 - 0.0625
    loss_fn = AUCMarginLoss(torch.tensor([0.5]), margin=1.0)
    with torch.no_grad():
        loss_fn.a.fill_(0.5), loss_fn.b.fill_(0.25), loss_fn.alpha.fill_(0.5)
    logits = torch.tensor([[math.log(3.0)], [-math.log(3.0)]])
    assert loss_fn(logits, torch.tensor([[1.0], [0.0]])).item() == pytest.approx(0.078125, abs=1e-6)


def test_auc_margin_loss_equals_libauc_and_alpha_ascends():
    libauc = pytest.importorskip("libauc.losses")
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(32, 3, generator=g), (torch.rand(32, 3, generator=g) < 0.3).float()
    prior = torch.tensor([0.2, 0.3, 0.45])
    ours = AUCMarginLoss(prior, margin=1.0)
    with torch.no_grad():
        ours.a.copy_(torch.tensor([0.6, 0.7, 0.5])), ours.b.copy_(torch.tensor([0.1, 0.3, 0.2])), ours.alpha.copy_(torch.tensor([0.2, 0.0, 1.5]))
    reference = []
    for c in range(3):
        ref = libauc.AUCMLoss(margin=1.0, imratio=float(prior[c]), version="v1", device="cpu")
        with torch.no_grad():
            ref.a.fill_(float(ours.a[c])), ref.b.fill_(float(ours.b[c])), ref.alpha.fill_(float(ours.alpha[c]))
        value = ref(torch.sigmoid(logits[:, c]), targets[:, c], auto=False)
        value.backward()
        reference.append((value.item(), ref.alpha.grad.item(), ref.a.grad.item()))
    loss = ours(logits, targets)
    loss.backward()
    assert loss.item() == pytest.approx(np.mean([r[0] for r in reference]), abs=1e-6)
    # a and b descend with the gradient of the objective; alpha's gradient is reversed (ascent on the dual variable)
    assert torch.allclose(ours.a.grad, torch.tensor([r[2] for r in reference]) / 3, atol=1e-6)
    assert torch.allclose(ours.alpha.grad, -torch.tensor([r[1] for r in reference]) / 3, atol=1e-6)

    with torch.no_grad():
        ours.alpha.fill_(-1.0)  # projected onto alpha >= 0 before use
    ours(logits, targets)
    assert (ours.alpha >= 0).all()


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann-Whitney AUROC of (N,) scores for (N,) labels in {0, 1}."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return ((pos[:, None] > neg[None]).float().mean() + 0.5 * (pos[:, None] == neg[None]).float().mean()).item()


def test_auc_margin_training_raises_auroc_over_chance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=g)
    y = ((x[:, :2].sum(1) + 0.5 * torch.randn(512, generator=g)) > 1.2).float()[:, None]  # ~20% positives
    model = nn.Linear(8, 1)
    loss_fn = AUCMarginLoss(y.mean(0), margin=1.0)
    params = [*model.parameters(), *loss_fn.parameters()]
    before = _auroc(model(x).detach()[:, 0], y[:, 0])
    for _ in range(300):  # plain SGD steps, as in PESG (descent on w, a, b; ascent on alpha through the loss)
        batch = torch.randint(0, 512, (64,), generator=g)
        loss_fn(model(x[batch]), y[batch]).backward()
        with torch.no_grad():
            for p in params:
                p -= 0.5 * p.grad
                p.grad = None
    after = _auroc(model(x).detach()[:, 0], y[:, 0])
    assert after > 0.9 and after > before + 0.2, (before, after)
    assert loss_fn.alpha.item() > 0  # the dual variable moved up from 0: the margin was violated at the start


def test_selection_keeps_each_parts_best_stops_on_patience_and_resumes(tmp_path):
    encoder = nn.ModuleDict({"coarse": nn.Linear(2, 2), "fine": nn.Linear(2, 2)})
    parts = {"coarse": "coarse.", "fine": "fine."}
    selection = Selection(tmp_path, parts, patience=2)
    snapshots = {}
    for step, scores in [(1, {"coarse": 0.6, "fine": 0.5}), (2, {"coarse": 0.7, "fine": 0.4}), (3, {"coarse": 0.65, "fine": 0.45})]:
        with torch.no_grad():
            for p in encoder.parameters():
                p.add_(1.0)
        snapshots[step] = {k: v.clone() for k, v in encoder.state_dict().items()}
        assert not selection.update(step, scores, encoder)
    assert selection.best == {"coarse": {"step": 2, "score": 0.7}, "fine": {"step": 1, "score": 0.5}}
    assert torch.equal(selection.weights["coarse.weight"], snapshots[2]["coarse.weight"])
    assert torch.equal(selection.weights["fine.weight"], snapshots[1]["fine.weight"])

    resumed = Selection.resume(tmp_path, parts, patience=2)
    assert resumed.seen(3) and not resumed.seen(4) and resumed.history == selection.history
    assert all(torch.equal(resumed.weights[k], v) for k, v in selection.weights.items())
    assert resumed.update(4, {"coarse": 0.69, "fine": 0.3}, encoder)  # coarse 2, fine 3 validations without improving
    assert Selection.resume(tmp_path, parts, patience=2).stopped
    assert not (tmp_path / "best.partial").exists()
