"""Finding, reading and strictly loading weights: a mismatch is a one-line error naming the key.

A weights source is a file, a folder holding one of the expected file names, or a Hugging Face
hub id (``hf-hub:timm/convnext_small.fb_in22k`` or ``org/name``) read from the local hub cache
only (``HF_HUB_CACHE``; these servers are offline): an id that is not cached is an error naming it
and the local-path alternative, never a download.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from cxr_irgen.errors import UserError

HUB_PREFIX = "hf-hub:"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_weights(source: str | Path, names: tuple[str, ...], option: str = "pretrained") -> Path:
    """The weights file of ``source``: itself, ``<folder>/<name>`` or ``<hub cache>/<id>/<name>`` (first of ``names``)."""
    text = str(source)
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{option}={text}: the folder holds none of {', '.join(names)}")
    repo = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    if not (text.startswith(HUB_PREFIX) or _HUB_ID.match(text)):
        raise UserError(f"{option}={text}: no such file or folder (or give a hub id such as hf-hub:org/name)")
    from huggingface_hub import constants, try_to_load_from_cache

    for name in names:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            return Path(cached)
    raise UserError(f"{option}={text}: hub id {repo} has none of {', '.join(names)} in the local Hugging Face cache "
                    f"({constants.HF_HUB_CACHE}) and downloads are off; run `huggingface-cli download {repo}` on a connected "
                    f"machine with HF_HUB_CACHE set there, or pass a local file or folder: {option}=/path/to/{names[0]}")


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
