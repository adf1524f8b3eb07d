"""Load a pretrained component from a hub id or a local directory, or build it with random weights.

Every frozen or trainable part of the vision module is described by the same config shape::

    pretrained: CompVis/stable-diffusion-v1-4   # hub id or local directory; null → random init from `config`
    subfolder: unet                             # inside `pretrained` (diffusers layout)
    config: {...}                               # architecture kwargs for random init (tiny test models)
    init_seed: 0                                # random init is seeded so a run dir can rebuild it exactly

Nothing is downloaded at import; with ``HF_HUB_OFFLINE=1`` a missing file fails with one line
naming the files to place where.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, TypeVar

import torch

from cxr_irgen.errors import UserError

T = TypeVar("T")


def load_pretrained(cls, source: str, subfolder: str | None, files: str, **kwargs):
    """``cls.from_pretrained(source, subfolder=...)``; a missing file or unreachable hub → one-line UserError."""
    where = Path(source) / subfolder if subfolder else Path(source)
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        return cls.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as err:
        hint = " ".join(str(err).split())[:160]
        raise UserError(f"cannot load {cls.__name__} from {source!r}: place {files} under {where}/ (or give a reachable hub id); cause: {hint}") from None


def plain(node) -> dict:
    """A config node as plain Python containers (so it is JSON-serialisable inside saved model configs)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def seeded_init(build: Callable[[], T], seed: int) -> T:
    """Build a randomly initialised module reproducibly without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients: frozen encoders never train nor keep activations for backward."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_state_dict_file(path: str | Path, what: str, hint: str) -> dict:
    """A state dict from ``.safetensors`` or a ``torch.save``'d dict (``weights_only=True``); UserError otherwise."""
    path = Path(str(path))
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist; {hint}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled full models and corrupt files raise many types
        raise UserError(
            f"{what}: {path} is not a plain state dict ({type(err).__name__}); a pickled model must be converted once on a trusted machine: "
            f"python -c \"import torch; m = torch.load('{path.name}', weights_only=False); torch.save(m.state_dict(), 'state_dict.pt')\""
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state.get("state_dict", state)


def file_sha1(path: Path) -> str:
    """The SHA-1 hex digest of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
