"""cxr_irgen.vision: labels (+ reference image) → chest X-ray image with a latent diffusion backbone.

- :mod:`~cxr_irgen.vision.encoders`: frozen CLIP text encoder (+ offline tokenizer) and reference-image encoder.
- :mod:`~cxr_irgen.vision.codec`: images ↔ latents (SD's AutoencoderKL, or an exact pixel-unshuffle codec).
- :mod:`~cxr_irgen.vision.conditioning`: condition tokens (text, text+image concat/average) with condition dropout.
- :mod:`~cxr_irgen.vision.backbones`: the backbone registry (``unet``: diffusers' U-Net, ``uvit``).
- :mod:`~cxr_irgen.vision.uvit`: U-ViT and the official-checkpoint key mapping.
- :mod:`~cxr_irgen.vision.model`: building, saving and loading the model from the ``vision/model`` config
  (``list_vision_models()``, ``build_vision_model(name, **overrides)``, one YAML per model).
- :mod:`~cxr_irgen.vision.features`: the feature cache (``train-vision prepare=true``).
- :mod:`~cxr_irgen.vision.train`: ``cxr-irgen train-vision``.
- :mod:`~cxr_irgen.vision.pipeline`: sampling (PNDM, DDIM, DPM-Solver++, classifier-free guidance) and saving images.

The names below are importable from here (loaded on first use, so importing this package stays light).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"list_vision_models": "model", "build_vision_model": "model"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
