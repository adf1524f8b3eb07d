"""The shared trainer's optimiser options: R2Gen's Adam (amsgrad) with per-group learning rates and StepLR per epoch,
ifcc's Noam schedule. The learning rates are read back from the trainer's own checkpoints, one per step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from cxr_irgen.errors import UserError
from cxr_irgen.utils.checkpoint import list_checkpoints
from cxr_irgen.utils.training import lr_lambda, make_accelerator, train

TRAINER = Path(__file__).resolve().parents[1] / "configs" / "trainer"
DATA = TensorDataset(torch.randn(24, 4, generator=torch.Generator().manual_seed(0)), torch.randn(24, 1, generator=torch.Generator().manual_seed(1)))


class TwoPart(torch.nn.Module):
    """A model that names its parameter groups like the report models (``visual``, ``language``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.visual, self.language = torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)

    def parameter_groups(self):
        return {"visual": list(self.visual.parameters()), "language": list(self.language.parameters())}

    def forward(self, x):
        return self.language(torch.relu(self.visual(x)))


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def lrs_per_step(run_dir: Path, preset: str, **overrides) -> list[dict]:
    """Train with ``configs/trainer/<preset>.yaml`` + overrides (batch 4: 6 steps per epoch); the groups' learning rates after each step."""
    cfg = OmegaConf.merge(OmegaConf.load(TRAINER / "default.yaml"), OmegaConf.load(TRAINER / f"{preset}.yaml"),
                          {"batch_size": 4, "checkpoint_every": 1, "keep_checkpoints": 100, "log_every": 1000, "max_grad_norm": 0.0}, overrides)
    cfg.pop("defaults", None)
    train(make_accelerator(cfg, 0), TwoPart(), DATA, mse, cfg, run_dir, seed=0)
    states = [torch.load(p / "optimizer.pt", weights_only=True) for p in list_checkpoints(run_dir)]
    return [{g["name"]: g for g in state["param_groups"]} for state in states]


def test_r2gen_preset_adam_amsgrad_group_lrs_and_step_per_epoch(tmp_path):
    after = lrs_per_step(tmp_path, "r2gen", max_steps=14)
    assert len(after) == 14
    for step, groups in enumerate(after, start=1):  # the rate the next step uses: epoch = step // 6
        factor = 0.8 ** (step // 6)
        assert groups["visual"]["lr"] == pytest.approx(5e-5 * factor) and groups["language"]["lr"] == pytest.approx(1e-4 * factor), step
        assert groups["visual"]["amsgrad"] and groups["visual"]["weight_decay"] == 5e-5
        assert not groups["visual"].get("decoupled_weight_decay", False)  # Adam, not AdamW


def test_m2trans_preset_noam_warmup_then_inverse_square_root(tmp_path):
    after = lrs_per_step(tmp_path, "m2trans", max_steps=12, lr=1e-3, warmup_steps=4)
    expected = [1e-3 * min((s + 1) / 4, math.sqrt(4 / (s + 1))) for s in range(1, 13)]
    for name in ("visual", "language"):  # no group_lr: every group at trainer.lr
        assert [g[name]["lr"] for g in after] == pytest.approx(expected)
    assert max(expected) == pytest.approx(1e-3) and expected[-1] == pytest.approx(1e-3 * math.sqrt(4 / 13))


def test_schedule_factors_and_bad_options_are_one_line_errors():
    step = lr_lambda("step", warmup=2, total=100, steps_per_epoch=3, step_epochs=2, gamma=0.5)
    assert [step(s) for s in range(10)] == [0.5, 1.0, 1, 1, 1, 1, 1, 1, 0.5, 0.5]  # warmup, then x0.5 every 6 steps
    with pytest.raises(UserError, match="noam needs trainer.warmup_steps"):
        lr_lambda("noam", warmup=0, total=10)
    with pytest.raises(UserError, match="use constant, linear, cosine, step, noam"):
        lr_lambda("exponential", warmup=0, total=10)
    cfg = OmegaConf.merge(OmegaConf.load(TRAINER / "default.yaml"), {"group_lr": {"vision": 1e-3}})
    with pytest.raises(UserError, match=r"group_lr names \['vision'\].*visual, language"):
        train(make_accelerator(cfg, 0), TwoPart(), DATA, mse, cfg, Path("/nonexistent"), seed=0)


def test_report_models_split_their_parameters_into_visual_and_language():
    from cxr_irgen.report_models.model import build_report_model
    from cxr_irgen.report_models.vocabulary import Vocabulary

    model = build_report_model("resnet-tiny", "r2gen-tiny", Vocabulary.build(["the heart is normal ."], min_count=1, max_words=10))
    groups = model.parameter_groups()
    assert {id(p) for p in groups["visual"]} == {id(p) for p in model.encoder.parameters()}
    assert sorted(id(p) for ps in groups.values() for p in ps) == sorted(id(p) for p in model.parameters())  # a partition
