"""Report generators compared with CXR-IRGen (encoder × decoder study, R2Gen, ...): images → reports.

Three registries, one YAML per model (timm/open_clip style):

- report generators (``list_report_models()``: ``cxr-irgen-language``, ``encoder-decoder``, ``repair``):
  ``load_report_generator(run_dir)`` for a trained one, ``create_report_model(encoder=..., decoder=..., vocab=...)``
  for a new encoder × decoder one (:mod:`~cxr_irgen.report_models.factory`);
- image encoders (``list_report_encoders()``, ``build_report_encoder(name, **overrides)``);
- report decoders (``list_report_decoders()``, ``build_report_decoder(name, vocab_size=..., max_positions=..., **overrides)``).

The names below are importable from here (loaded on first use, so importing this package stays light).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_report_generator": "factory", "list_report_models": "factory", "create_report_model": "factory",
    "list_report_encoders": "encoders", "build_report_encoder": "encoders",
    "list_report_decoders": "decoders", "build_report_decoder": "decoders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
