"""The trainer's speed levers change speed, not results: channels_last and fused AdamW match the defaults."""

from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf

from cxr_irgen.utils.speed import apply_speed_levers
from cxr_irgen.vision.model import build_encoders, build_trainable, vision_model_config


def test_channels_last_and_fused_adamw_give_the_same_step():
    cfg = vision_model_config("unet-tiny")
    plain = build_trainable(cfg, build_encoders(cfg)).backbone
    fast = apply_speed_levers(copy.deepcopy(plain), OmegaConf.create({"channels_last": True}))
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 78, plain.config.cross_attention_dim, generator=g)
    steps = torch.tensor([10, 500])
    updated = []
    for model, fused in ((plain, None), (fast, True)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
        model(latents, steps, encoder_hidden_states=context).sample.square().mean().backward()
        optimizer.step()
        updated.append(model(latents, steps, encoder_hidden_states=context).sample.detach())
    torch.testing.assert_close(updated[1], updated[0], atol=1e-4, rtol=1e-4)
    assert set(fast.state_dict()) == set(plain.state_dict())
