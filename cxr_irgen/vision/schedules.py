"""Noise schedules of the diffusion backbones, and the time input each backbone was trained with.

A schedule (``vision/model/noise_schedule``) fixes the discrete training steps n = 0 … N−1, their
ᾱ_n (the diffusers schedulers run over them, for training noise and for PNDM/DDIM/DPM-Solver++
sampling) and what the backbone's time embedding receives at step n:

- ``sd_scaled_linear``: Stable Diffusion v1.4's DDPM schedule (betas ``scaled_linear``
  0.00085–0.012); the backbone sees n. The SD U-Net was trained under it.
- ``uvit_vp``: the continuous VP-SDE of the official U-ViT checkpoints (β(t) = β_min + t (β_max − β_min),
  β_min 0.1, β_max 20), discretised at t_n = (n + 1) / N, so ᾱ_n = exp(−(β_min t_n + (β_max − β_min) t_n² / 2));
  the backbone sees t_n · ``time_scale`` (999), as U-ViT's ``ScoreModel.predict`` feeds ``t * 999``.

The two disagree badly: ᾱ at t = 0.5 is 0.276 under ``sd_scaled_linear`` but 0.079 under ``uvit_vp``
(t = 0.75: 0.056 vs 0.0034), so a U-ViT checkpoint fine-tuned under the wrong one starts from a
mismatched time conditioning.
"""

from __future__ import annotations

import numpy as np
import torch

from cxr_irgen.errors import UserError

SCHEDULE_KINDS = ("sd_scaled_linear", "uvit_vp")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what the backbone outputs: the noise, the velocity, the clean latents


def vp_alphas_cumprod(num_steps: int, beta_min: float, beta_max: float) -> np.ndarray:
    """ᾱ_n (N,) of the VP-SDE at t_n = (n + 1) / N, float64."""
    t = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
    return np.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t**2))


def _kind(noise_schedule) -> str:
    kind = noise_schedule.get("kind", "sd_scaled_linear")  # models saved before schedules had names used SD's
    if kind not in SCHEDULE_KINDS:
        raise UserError(f"noise_schedule.kind={kind!r}: use one of {', '.join(SCHEDULE_KINDS)} (vision/model/noise_schedule=...)")
    return kind


def prediction_type_of(noise_schedule) -> str:
    """The schedule's ``prediction_type`` (``epsilon`` when absent); UserError for another value."""
    kind = str(noise_schedule.get("prediction_type", "epsilon"))
    if kind not in PREDICTION_TYPES:
        raise UserError(f"noise_schedule.prediction_type={kind!r}: use one of {', '.join(PREDICTION_TYPES)}")
    return kind


def scheduler_kwargs(noise_schedule) -> dict:
    """Keyword arguments that put any diffusers scheduler on this schedule's ᾱ_n (validated: kind, prediction type)."""
    n = int(noise_schedule["num_train_timesteps"])
    common = {"num_train_timesteps": n, "prediction_type": prediction_type_of(noise_schedule)}
    if _kind(noise_schedule) == "sd_scaled_linear":
        keys = ("beta_schedule", "beta_start", "beta_end")
        return {**common, **{k: noise_schedule[k] for k in keys}}
    alphas_cumprod = vp_alphas_cumprod(n, float(noise_schedule["beta_min"]), float(noise_schedule["beta_max"]))
    betas = 1.0 - alphas_cumprod / np.concatenate([[1.0], alphas_cumprod[:-1]])
    return {**common, "trained_betas": betas.tolist()}


class BackboneTime:
    """Step index n (any shape) → the backbone's time input: n (``sd_scaled_linear``) or (n + 1) / N · time_scale (``uvit_vp``)."""

    def __init__(self, noise_schedule):
        n = int(noise_schedule["num_train_timesteps"])
        vp = _kind(noise_schedule) == "uvit_vp"
        self.offset = 1.0 if vp else 0.0
        self.scale = float(noise_schedule["time_scale"]) / n if vp else 1.0

    def __call__(self, timesteps: torch.Tensor | int) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps)
        if self.offset == 0.0 and self.scale == 1.0:
            return timesteps
        return (timesteps.float() + self.offset) * self.scale
