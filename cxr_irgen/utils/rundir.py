"""Where a command writes: ``cfg.run_dir`` when set (Python callers, the demo), else Hydra's run directory."""

from __future__ import annotations

import os
from pathlib import Path


def run_dir(cfg) -> Path:
    """The output directory of the current command run."""
    from hydra.core.hydra_config import HydraConfig

    explicit = cfg.get("run_dir") if cfg is not None else None
    if explicit:
        return Path(explicit)
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(os.getcwd())


def start_run(cfg) -> Path:
    """Create the run directory and save the resolved config there as ``config.yaml``; returns the directory."""
    from omegaconf import OmegaConf

    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out
