"""Report generators compared with CXR-IRGen (encoder × decoder study, R2Gen, ...): images → reports."""

from __future__ import annotations

import importlib

_EXPORTS = {"load_report_generator": "interface"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
