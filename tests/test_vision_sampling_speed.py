"""Sampling encodes each distinct prompt and reference image once per call, with the same images as one at a time."""

from __future__ import annotations

import torch

from cxr_irgen.data.labels import parse_labels
from cxr_irgen.vision.model import build_encoders, build_trainable, vision_model_config
from cxr_irgen.vision.pipeline import VisionPipeline


def _spy(module, monkeypatch) -> list[int]:
    """Record the batch size of every call of ``module``."""
    sizes, forward = [], module.forward

    def counted(inputs, *args, **kwargs):
        sizes.append(len(inputs))
        return forward(inputs, *args, **kwargs)

    monkeypatch.setattr(module, "forward", counted)
    return sizes


def test_distinct_prompts_and_references_encoded_once(monkeypatch):
    cfg = vision_model_config("unet-tiny")
    encoders = build_encoders(cfg)
    pipe = VisionPipeline(encoders, build_trainable(cfg, encoders), cfg.noise_schedule, cfg.image_size)
    assert pipe.uses_reference
    a, b = parse_labels("Cardiomegaly=1"), parse_labels("No Finding=1")
    refs = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    labels, references, seeds = [a, a, b, a], refs[[0, 0, 1, 1]], [1, 2, 3, 4]
    one_at_a_time = torch.cat([pipe(labels[i : i + 1], references[i : i + 1], seeds=seeds[i : i + 1], steps=2, guidance=3.0, scheduler="ddim") for i in range(4)])
    text_calls, image_calls = _spy(encoders.text_encoder, monkeypatch), _spy(encoders.image_encoder, monkeypatch)
    batched = pipe(labels, references, seeds=seeds, steps=2, guidance=3.0, scheduler="ddim")
    assert text_calls == [2] and image_calls == [2]
    torch.testing.assert_close(batched, one_at_a_time, atol=1e-5, rtol=1e-5)
