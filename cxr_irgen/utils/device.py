"""The one device rule of the CLI configs: ``device=auto`` is CUDA when there is a GPU, otherwise the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; anything else (``cpu``, ``cuda:1``, a device) as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
