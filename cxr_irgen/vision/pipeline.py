"""Sampling: label vectors (+ reference images) → images, with classifier-free guidance.

``VisionPipeline.from_run_dir(run_dir)`` rebuilds a model saved by ``cxr-irgen train-vision``;
calling it generates a batch deterministically by seed: each image's initial noise comes from
its own ``torch.Generator`` seeded with its seed, and the schedulers (PNDM, DDIM with η = 0,
DPM-Solver++) are deterministic, so an image depends on its seed and condition only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cxr_irgen.data.labels import format_labels, labels_to_prompt
from cxr_irgen.errors import UserError
from cxr_irgen.utils.files import atomic_path, write_text_atomic
from cxr_irgen.utils.progress import progress_bar
from cxr_irgen.vision.backbones import BACKBONE_WEIGHTS
from cxr_irgen.vision.conditioning import guidance_warning
from cxr_irgen.vision.model import BACKBONE_DIR, MODEL_DIR, FrozenEncoders, VisionModel, load_vision_model
from cxr_irgen.vision.schedules import PREDICTION_TYPES, prediction_type_of, scheduler_kwargs

log = logging.getLogger(__name__)
SCHEDULERS = ("pndm", "ddim", "dpm++")


def build_sampler(name: str, noise_schedule: dict):
    """A diffusers scheduler over the training noise schedule (:mod:`cxr_irgen.vision.schedules`), configured as Stable
    Diffusion's. It always steps on noise estimates: :func:`denoise` converts a velocity or clean-latent prediction
    first, so every sampler (PNDM too) runs with every ``prediction_type``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    common = {**scheduler_kwargs(noise_schedule), "prediction_type": "epsilon"}
    if name == "pndm":
        return PNDMScheduler(**common, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise UserError(f"scheduler={name!r}: use one of {', '.join(SCHEDULERS)}")


def initial_noise(seeds: list[int], shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
    """(B, *shape) standard normal noise, image ``i`` drawn from a CPU generator seeded with ``seeds[i]``."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device, dtype)


def as_noise(prediction: torch.Tensor, latents: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The noise estimate (B, C, h, w) equivalent to the backbone's ``prediction`` at noisy ``latents`` with ᾱ ``alpha_bar``:
    ε = (x_t − √ᾱ·x̂_0) / √(1 − ᾱ) for ``sample``, ε = √ᾱ·v + √(1 − ᾱ)·x_t for ``v_prediction`` (diffusers' own conversions)."""
    if prediction_type == "epsilon":
        return prediction
    alpha_bar = alpha_bar.to(latents.device, latents.dtype)
    if prediction_type == "sample":
        return (latents - alpha_bar.sqrt() * prediction) / (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * prediction + (1 - alpha_bar).sqrt() * latents
    raise UserError(f"noise_schedule.prediction_type={prediction_type!r}: use one of {', '.join(PREDICTION_TYPES)}")


@torch.no_grad()
def denoise(model: VisionModel, condition: torch.Tensor, noise: torch.Tensor, sampler, steps: int, guidance: float, progress: bool = False,
            prediction_type: str = "epsilon") -> torch.Tensor:
    """Run the reverse process from ``noise`` (B, 4, h, w) under ``condition`` (B, L, D); guidance 1 disables CFG.
    The backbone predicts ``prediction_type`` (its noise schedule's); the sampler steps on the equivalent noise."""
    sampler.set_timesteps(steps, device=noise.device)
    latents = noise * sampler.init_noise_sigma
    guided = guidance != 1.0
    context = torch.cat([model.conditioning.unconditional(condition.shape[0]).to(condition.dtype), condition]) if guided else condition
    for t in progress_bar(sampler.timesteps, desc="sample", leave=False, disable=not progress):
        model_input = sampler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
        prediction = model.predict(model_input, t, context)
        if guided:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + guidance * (conditional - unconditional)
        eps = as_noise(prediction, latents, sampler.alphas_cumprod[int(t)], prediction_type)
        latents = sampler.step(eps, t, latents).prev_sample
    return latents


def file_hash(path: Path, length: int = 12) -> str:
    """Short sha256 of a file (identifies the weights an image came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


class VisionPipeline:
    """``labels → prompt (+ reference image) → image`` for a trained vision model."""

    def __init__(self, encoders: FrozenEncoders, model: VisionModel, noise_schedule: dict, image_size: int, checkpoint_hash: str = "", device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.encoders, self.model = encoders.to(self.device).eval(), model.to(self.device).eval()
        self.noise_schedule, self.image_size, self.checkpoint_hash = dict(noise_schedule), int(image_size), checkpoint_hash
        self.uses_reference = model.conditioning.uses_image

    @classmethod
    def from_run_dir(cls, path: str | Path, device: str | torch.device = "cpu") -> "VisionPipeline":
        """Load ``<path>/model`` (or ``path`` itself when it is the model folder) saved by train-vision."""
        path = Path(path)
        model_dir = path / MODEL_DIR if (path / MODEL_DIR).is_dir() else path
        cfg, encoders, model = load_vision_model(model_dir)
        return cls(encoders, model, cfg.noise_schedule, cfg.image_size, file_hash(model_dir / BACKBONE_DIR / BACKBONE_WEIGHTS), device)

    def __call__(
        self,
        labels: list[np.ndarray],
        reference_images: torch.Tensor | None,
        seeds: list[int],
        steps: int = 50,
        guidance: float = 7.5,
        scheduler: str = "pndm",
        batch_size: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Images (B, 1, S, S) in [0, 1] for label vectors (14,) and reference images (B, 1, H, W) in [0, 1] (or None)."""
        if len(seeds) != len(labels):
            raise UserError(f"got {len(labels)} label vectors but {len(seeds)} seeds: give one seed per image")
        warning = guidance_warning(self.model.conditioning.dropout, guidance)
        if warning:
            log.warning(warning)
        batch_size = batch_size or len(labels)
        images = []
        for start in range(0, len(labels), batch_size):
            end = start + batch_size
            refs = reference_images[start:end].to(self.device) if reference_images is not None and self.uses_reference else None
            images.append(self._generate(labels[start:end], refs, seeds[start:end], steps, guidance, build_sampler(scheduler, self.noise_schedule), progress))
        return torch.cat(images)

    def _generate(self, labels, reference_images, seeds, steps, guidance, sampler, progress) -> torch.Tensor:
        features = self._encode_distinct([labels_to_prompt(v) for v in labels], reference_images)
        dtype = next(self.model.parameters()).dtype
        condition = self.model.conditioning.tokens({k: v.to(dtype) for k, v in features.items()})
        latent_size = self.image_size // self.encoders.vae.downscale
        noise = initial_noise(seeds, (self.encoders.vae.latent_channels, latent_size, latent_size), self.device, condition.dtype)
        latents = denoise(self.model, condition, noise, sampler, steps, guidance, progress, prediction_type_of(self.noise_schedule))
        return self.encoders.vae.decode(latents).cpu()

    def _encode_distinct(self, prompts: list[str], reference_images: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``encode_conditions`` on each distinct prompt and reference image once (the AUROC protocol draws
        hundreds of images per label vector), rows expanded back to the batch order."""
        distinct = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        prompt_rows = torch.tensor([distinct[p] for p in prompts], device=self.device)
        references, reference_rows = None, None
        if reference_images is not None:
            references, reference_rows = torch.unique(reference_images.flatten(1), dim=0, return_inverse=True)
            references = references.view(-1, *reference_images.shape[1:])
        features = self.encoders.encode_conditions(list(distinct), references)
        return {k: v[reference_rows if k == "image_embeds" else prompt_rows] for k, v in features.items()}

    def image_meta(self, labels: list[np.ndarray], seeds: list[int], reference_ids: list[str] | None, steps: int, guidance: float, scheduler: str) -> list[dict]:
        """The JSON sidecar of each image of one call."""
        reference_ids = reference_ids or [None] * len(labels)
        return [
            {"labels": format_labels(v), "prompt": labels_to_prompt(v), "reference_id": ref, "seed": int(seed), "scheduler": scheduler,
             "noise_schedule": self.noise_schedule.get("kind", "sd_scaled_linear"),
             "steps": int(steps), "guidance": float(guidance), "checkpoint_hash": self.checkpoint_hash}
            for v, seed, ref in zip(labels, seeds, reference_ids)
        ]


def to_pil(image: torch.Tensor):
    """One image (1, H, W) in [0, 1] as an 8-bit grayscale ``PIL.Image`` (what :func:`save_images` writes)."""
    from PIL import Image

    return Image.fromarray((image.squeeze(0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


def save_images(images: torch.Tensor, meta: list[dict], out_dir: str | Path) -> list[Path]:
    """Write ``images`` (B, 1, H, W) in [0, 1] as 8-bit PNGs ``NNNNN.png`` (or ``meta[i]['name']``) with JSON sidecars."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, info) in enumerate(zip(images, meta)):
        name = info.get("name", f"{i:05d}")
        png = out_dir / f"{name}.png"
        with atomic_path(png) as tmp:
            to_pil(image).save(tmp, format="PNG")
        # the sidecar's existence marks the image done (generate's resume): written last, atomically
        write_text_atomic(out_dir / f"{name}.json", json.dumps({**info, "image": png.name}, indent=1))
        paths.append(png)
    return paths
