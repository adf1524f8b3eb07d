"""Reading weight files safely and loading them strictly: a mismatch is a one-line error naming the key."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cxr_irgen.errors import UserError


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``; a ``state_dict`` entry is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: one line
        raise UserError(f"cannot read weights {path}: {str(err).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict")
    return state


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Copy ``state`` into ``module``; every key must match in name and shape, else a UserError naming the first mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(
            f"{source} does not match the model: {len(missing)} missing key(s) (first {missing[:1]}), "
            f"{len(unexpected)} unexpected (first {unexpected[:1]}); check the model config"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(f"{source} does not match the model: {key} has shape {tuple(value.shape)}, the model's is {tuple(own[key].shape)}")
    module.load_state_dict(state, strict=True)
    return module
