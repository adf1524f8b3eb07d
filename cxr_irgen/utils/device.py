"""Where work runs: the one device rule of the CLI configs (``device=auto`` is CUDA when there is a GPU, otherwise the
CPU), and the teardown of a multi-process run's process group."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; anything else (``cpu``, ``cuda:1``, a device) as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def close_process_group() -> None:
    """Destroy torch.distributed's default process group if one is open (a no-op otherwise).

    A process that exits with a gloo group still open can abort in gloo's thread teardown ("terminate called without an
    active exception", SIGABRT) instead of returning its exit status; commands and the test workers call this on the way
    out, also after an error.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
