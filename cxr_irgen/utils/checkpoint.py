"""Atomic, safely loadable training checkpoints.

Layout of ``<run_dir>/checkpoints/step-0000100/``:
``model.safetensors`` (trained module), ``optimizer.pt`` / ``scheduler.pt`` / ``ema.pt``
(tensors and plain Python only, read with ``weights_only=True``), ``rng-rank{r}.pt``
(torch CPU/CUDA and Python RNG per process) and ``state.json`` (step, written last).
A checkpoint is built in ``step-N.partial`` and renamed when complete, so a killed run
never leaves a half-written checkpoint where ``resume=latest`` would pick it up.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from cxr_irgen.errors import UserError
from cxr_irgen.utils.files import replace_dir

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".partial") and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``None`` → no resume; ``latest`` → newest checkpoint in this run (None if none yet);
    a run dir → its newest checkpoint; a checkpoint dir → itself."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if (path / "state.json").exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise UserError(f"resume={resume}: no complete checkpoint under {path / CHECKPOINT_DIR}; pass a run dir, a checkpoint dir or 'latest'")
    return found[-1]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(accelerator, run_dir: Path, step: int, model, optimizer, scheduler, ema=None, keep: int = 2, extra: dict | None = None) -> Path:
    """Write checkpoint ``step`` atomically (all processes call this; rank 0 writes shared files)."""
    final = checkpoint_path(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    rank = accelerator.process_index
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), partial / f"rng-rank{rank}.pt")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(partial / "model.safetensors"))
        torch.save(optimizer.state_dict(), partial / "optimizer.pt")
        torch.save(scheduler.state_dict(), partial / "scheduler.pt")
        if ema is not None:
            torch.save(ema.state_dict(), partial / "ema.pt")
        state = {"step": step, "num_processes": accelerator.num_processes, **(extra or {})}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "state.json").write_text(json.dumps(state, indent=2))
        replace_dir(partial, final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_model_strictly(model: torch.nn.Module, file: Path) -> None:
    """Load ``file`` into ``model``; a missing, unexpected or differently shaped key is a :class:`UserError` naming it."""
    from safetensors import safe_open

    if not file.exists():
        raise FileNotFoundError(f"{file} is missing")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(file), "pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    reshaped = [f"{k} {stored[k]} vs {expected[k]}" for k in stored if k in expected and stored[k] != expected[k]]
    missing, unexpected = map(sorted, load_model(model, str(file), strict=False)) if not reshaped else ([], [])
    if reshaped or missing or unexpected:
        details = [f"{len(v)} {name} (e.g. {', '.join(map(str, v[:2]))})" for name, v in
                   (("with another shape (checkpoint vs model)", reshaped), ("missing", missing), ("unexpected", unexpected)) if v]
        raise UserError(f"checkpoint {file.parent} does not match this model: keys {'; '.join(details)}; check the model config")


def load_checkpoint(accelerator, path: Path, model, optimizer, scheduler, ema=None) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its ``state.json``."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        _load_model_strictly(accelerator.unwrap_model(model), path / "model.safetensors")
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        if ema is not None:
            ema.load_state_dict(torch.load(path / "ema.pt", weights_only=True, map_location="cpu"))
        rng = path / f"rng-rank{accelerator.process_index}.pt"
        if rng.exists():
            _set_rng_state(torch.load(rng, weights_only=True))
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"cannot resume from {path}: {str(err).splitlines()[0]}") from None
    return state
