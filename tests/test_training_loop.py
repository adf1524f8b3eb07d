"""The shared trainer and its checkpoints on a tiny MLP (CPU, ~1 s per run).

Failure paths: a crash while a checkpoint is written (a leftover ``step-N.partial``, a folder
without ``state.json``) is ignored by ``resume=latest``; pruning keeps the newest ``keep``;
``resume=<run dir | checkpoint dir>``; a checkpoint of another model is a one-line error that
names the key; a NaN/inf loss stops the run; a run killed mid-way and resumed with warmup, a
cosine schedule, EMA, dropout and ``grad_accum=2`` ends bit-exact equal to an uninterrupted one, on one process and
on two (gloo), where the ranks must also end equal and a NaN on one rank must stop both.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset
from two_process_worker import launch

from cxr_irgen.errors import UserError
from cxr_irgen.utils.checkpoint import checkpoint_path, list_checkpoints, resolve_resume
from cxr_irgen.utils.training import make_accelerator, train

TRAINER = Path(__file__).resolve().parents[1] / "configs" / "trainer" / "default.yaml"
DATA = TensorDataset(torch.randn(24, 4, generator=torch.Generator().manual_seed(0)), torch.randn(24, 1, generator=torch.Generator().manual_seed(1)))
SCHEDULE = {"warmup_steps": 2, "lr_schedule": "cosine", "ema_decay": 0.9, "grad_accum": 2}


class Interrupt(Exception):
    """Stands for the process being killed."""


def mlp(hidden: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(hidden, 1))


def mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def run(run_dir: Path, model=None, loss_fn=mse, on_step=None, **trainer):
    """Train ``model`` (default: a fresh :func:`mlp`) with 6 steps of batch 4, checkpoints every 2; returns (model, result)."""
    cfg = OmegaConf.merge(OmegaConf.load(TRAINER), {"max_steps": 6, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 2, "log_every": 1000}, trainer)
    model = mlp() if model is None else model
    result = train(make_accelerator(cfg, 0), model, DATA, loss_fn, cfg, run_dir, seed=0, on_step=on_step)
    return model, result


def steps(run_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir)]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_killed_while_checkpointing_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """Control: the same run never interrupted. A resume that read the leftovers, skipped the EMA/scheduler/RNG state or
    restarted the sampler would end with other weights (dropout makes the RNG state matter, grad_accum the sampler offset)."""
    import cxr_irgen.utils.checkpoint as checkpoint

    straight, straight_result = run(tmp_path / "straight", max_steps=7, **SCHEDULE)

    save_model = checkpoint.save_model

    def dies_at_step_6(model, filename):
        if "step-0000006" in filename:
            raise Interrupt
        save_model(model, filename)

    monkeypatch.setattr(checkpoint, "save_model", dies_at_step_6)
    crashed = tmp_path / "crashed"
    with pytest.raises(Interrupt):
        run(crashed, max_steps=7, **SCHEDULE)
    monkeypatch.setattr(checkpoint, "save_model", save_model)
    assert (checkpoint_path(crashed, 6).with_name("step-0000006.partial")).is_dir() and steps(crashed) == [2, 4]
    # A partial folder complete but for its rename, and a renamed folder missing its state.json: neither is a checkpoint.
    shutil.copytree(checkpoint_path(crashed, 4), crashed / "checkpoints" / "step-0000005.partial")
    shutil.copytree(checkpoint_path(crashed, 4), checkpoint_path(crashed, 5))
    (checkpoint_path(crashed, 5) / "state.json").unlink()
    assert resolve_resume("latest", crashed) == checkpoint_path(crashed, 4)

    resumed, resumed_result = run(crashed, max_steps=7, resume="latest", **SCHEDULE)
    assert resumed_result.step == 7 and resumed_result.losses == straight_result.losses[4:]
    assert_same_weights(straight, resumed)
    assert not torch.equal(mlp().state_dict()["0.weight"], resumed.state_dict()["0.weight"])  # it did train


def test_resume_after_a_kill_between_checkpoints_equals_uninterrupted(tmp_path):
    """The usual case: killed at step 5 (checkpoint 4 is the newest), rerun with resume=latest."""
    straight, _ = run(tmp_path / "straight", max_steps=7, **SCHEDULE)

    def kill_at_5(step, model):
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "killed", max_steps=7, on_step=kill_at_5, **SCHEDULE)
    resumed, result = run(tmp_path / "killed", max_steps=7, resume="latest", **SCHEDULE)
    assert result.step == 7 and len(result.losses) == 3
    assert_same_weights(straight, resumed)


def test_pruning_keeps_the_newest(tmp_path):
    run(tmp_path / "two", max_steps=5, checkpoint_every=1, keep_checkpoints=2)
    assert steps(tmp_path / "two") == [4, 5]
    run(tmp_path / "all", max_steps=5, checkpoint_every=1, keep_checkpoints=0)
    assert steps(tmp_path / "all") == [1, 2, 3, 4, 5]


def test_resume_from_a_run_dir_or_a_checkpoint_dir(tmp_path):
    source, _ = run(tmp_path / "source", max_steps=4, keep_checkpoints=0)
    _, from_run = run(tmp_path / "a", max_steps=6, resume=str(tmp_path / "source"))
    assert from_run.step == 6 and len(from_run.losses) == 2  # started at the run's newest checkpoint, step 4
    _, from_checkpoint = run(tmp_path / "b", max_steps=6, resume=str(checkpoint_path(tmp_path / "source", 2)))
    assert from_checkpoint.step == 6 and len(from_checkpoint.losses) == 4
    _, nothing_to_do = run(tmp_path / "c", max_steps=4, resume=str(tmp_path / "source"))
    assert nothing_to_do.step == 4 and nothing_to_do.losses == []
    with pytest.raises(UserError, match="no complete checkpoint under .*empty"):
        run(tmp_path / "d", resume=str(tmp_path / "empty"))
    assert resolve_resume("latest", tmp_path / "fresh") is None and resolve_resume(None, tmp_path / "source") is None


@pytest.mark.parametrize("other, key", [(lambda: mlp(hidden=8), r"0\.weight"), (lambda: torch.nn.Sequential(*mlp(), torch.nn.Linear(1, 1)), r"4\.weight")])
def test_checkpoint_of_another_model_names_the_key(tmp_path, other, key):
    run(tmp_path / "source", max_steps=2)
    with pytest.raises(UserError, match=key) as err:
        run(tmp_path / "other", model=other(), max_steps=4, resume=str(tmp_path / "source"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_the_run_and_names_the_last_checkpoint(tmp_path, bad):
    calls = []

    def breaks_at_third_batch(model, batch):
        calls.append(1)
        return mse(model, batch) * (bad if len(calls) == 3 else 1.0)

    with pytest.raises(UserError, match=rf"loss became {bad} at step 2; .*Last good checkpoint: .*step-0000002") as err:
        run(tmp_path, loss_fn=breaks_at_third_batch)
    assert "\n" not in str(err.value) and len(calls) == 3 and steps(tmp_path) == [2]


@pytest.mark.slow
def test_two_processes_synchronise_and_resume_like_one_uninterrupted_run(tmp_path):
    """Two gloo processes: both ranks end with the same weights (ranks that never synchronised would not: each sees its own
    half of the data), a run resumed from the step-2 checkpoint equals the uninterrupted one, and the losses are finite."""
    ranks = launch("train", tmp_path)
    assert ranks[0]["straight"] == ranks[1]["straight"] and ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["resumed"] == ranks[0]["straight"] and ranks[1]["resumed"] == ranks[1]["straight"]
    assert len(ranks[0]["losses"]) == 4 and all(math.isfinite(v) for v in ranks[0]["losses"])
    assert ranks[0]["resumed_losses"] == ranks[0]["losses"][2:]
    assert (checkpoint_path(tmp_path / "straight", 4) / "rng-rank1.pt").exists()


@pytest.mark.slow
def test_non_finite_loss_on_one_process_stops_every_process(tmp_path):
    """Rank 1 alone sees NaN: both ranks must stop with the message (a rank-local check leaves rank 0 waiting in the
    gradient all-reduce until the launcher is killed)."""
    ranks = launch("nan", tmp_path, timeout=120)
    for rank in ranks:
        assert rank["error"] and "loss became nan at step 2" in rank["error"], rank


def test_denormal_floats_are_flushed_while_training(tmp_path):
    """float32 below 1.2e-38 makes x86 ops 10-100x slower (benchmarks/demo_stalls.py): the trainer flushes it to zero,
    unless trainer.flush_denormal=false."""
    seen = []
    product = lambda step, model: seen.append((torch.tensor([1e-30]) * 1e-9).item())  # 1e-39: denormal
    run(tmp_path / "flushed", on_step=product, max_steps=1)
    run(tmp_path / "kept", on_step=product, max_steps=1, flush_denormal=False)
    assert seen[0] == 0.0 and seen[1] == pytest.approx(1e-39, rel=1e-3)
