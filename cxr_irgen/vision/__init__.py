"""cxr_irgen.vision: labels (+ reference image) → chest X-ray image with a latent diffusion backbone.

- :mod:`~cxr_irgen.vision.encoders`: frozen CLIP text encoder (+ offline tokenizer) and reference-image encoder.
- :mod:`~cxr_irgen.vision.codec`: images ↔ latents (SD's AutoencoderKL, or an exact pixel-unshuffle codec).
- :mod:`~cxr_irgen.vision.conditioning`: condition tokens (text, text+image concat/average) with condition dropout.
- :mod:`~cxr_irgen.vision.uvit`: U-ViT and the official-checkpoint key mapping (the U-Net is diffusers').
- :mod:`~cxr_irgen.vision.model`: building, saving and loading the model from the ``vision/model`` config.
- :mod:`~cxr_irgen.vision.features`: the feature cache (``train-vision prepare=true``).
- :mod:`~cxr_irgen.vision.train`: ``cxr-irgen train-vision``.
- :mod:`~cxr_irgen.vision.pipeline`: sampling (PNDM, DDIM, DPM-Solver++, classifier-free guidance) and saving images.
"""
