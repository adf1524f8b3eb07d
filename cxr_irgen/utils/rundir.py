"""Where a command writes: Hydra's run directory, or ``cfg.run_dir`` when called from Python."""

from __future__ import annotations

import os
from pathlib import Path


def run_dir(cfg) -> Path:
    """The output directory of the current command run."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    explicit = cfg.get("run_dir") if cfg is not None else None
    return Path(explicit or os.getcwd())
