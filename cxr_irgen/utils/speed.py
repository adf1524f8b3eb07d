"""Speed levers named in the trainer config, applied to a module before training or inference.

``trainer.tf32`` (TF32 matmuls and convolutions on CUDA; no effect on CPU), ``trainer.channels_last``
(the module's 4-D weights in channels-last memory format), ``trainer.compile`` (``torch.compile`` of
the module in place, so its state-dict keys do not change). ``trainer.fused_adamw``,
``trainer.pin_memory`` and ``trainer.persistent_workers`` are read by the training loop itself.
``benchmarks/vision_train.py`` measures each one.
"""

from __future__ import annotations

import torch
from torch import nn


def apply_speed_levers(module: nn.Module, cfg) -> nn.Module:
    """Apply the levers that ``cfg`` (a trainer config; missing keys mean off, TF32 on) switches on; returns ``module``."""
    if torch.cuda.is_available():
        tf32 = bool(cfg.get("tf32", True))
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if cfg.get("channels_last", False):
        module.to(memory_format=torch.channels_last)
    if cfg.get("compile", False):
        module.compile()
    return module
