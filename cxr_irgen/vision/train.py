"""`cxr-irgen train-vision`: fine-tune the diffusion backbone (U-Net or U-ViT) and its condition tokens.

MSE loss under the noise schedule of the model config (``vision/model/noise_schedule``: SD v1.4's scaled_linear
DDPM schedule, or the U-ViT checkpoint's VP-SDE; :mod:`cxr_irgen.vision.schedules`), on the schedule's
``prediction_type``: the noise (``epsilon``, SD v1.4's), the velocity (``v_prediction``) or the clean latents (``sample``). Frozen encoders stay in eval mode without gradients.
``prepare=true`` only writes the feature cache (VAE latents, CLIP text/image features);
``features=DIR`` trains from such a cache so each step runs the backbone only; without it, each
step encodes its batch. The final model goes to ``<run_dir>/model`` (see
:mod:`cxr_irgen.vision.model`), loadable by :meth:`VisionPipeline.from_run_dir`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_irgen.errors import UserError
from cxr_irgen.utils.rundir import run_dir
from cxr_irgen.utils.speed import apply_speed_levers
from cxr_irgen.vision.conditioning import guidance_warning
from cxr_irgen.vision.model import MODEL_DIR, FrozenEncoders, VisionModel, build_encoders, build_noise_scheduler, build_trainable
from cxr_irgen.vision.schedules import scheduler_kwargs

log = logging.getLogger(__name__)


class EpochClock:
    """The sampler's current epoch, shared with the dataset (set by the training loop's ``on_epoch``)."""

    def __init__(self):
        self.epoch = 0

    def set(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self) -> int:
        return self.epoch


def prediction_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the backbone learns to output (B, C, h, w) for the scheduler's ``prediction_type`` (validated by
    :func:`~cxr_irgen.vision.schedules.scheduler_kwargs`): the noise, the velocity √ᾱ·ε − √(1 − ᾱ)·x_0, or x_0."""
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return latents if kind == "sample" else noise


def timestep_weights(bias, num_train_timesteps: int) -> torch.Tensor | None:
    """Relative draw weights (T,) of the training steps: the lowest-noise ``bias.portion`` of them ``bias.multiplier``
    times as likely as the rest (diffusers' ``timestep_bias_strategy="earlier"``); None when the multiplier is 1
    (uniform, as the paper). A bad setting raises :class:`~cxr_irgen.errors.UserError`."""
    portion, multiplier = float(bias.portion), float(bias.multiplier)
    if not 0 < portion <= 1 or multiplier <= 0:
        raise UserError(f"timestep_bias: portion={portion} must be in (0, 1] and multiplier={multiplier} above 0")
    if multiplier == 1:
        return None
    weights = torch.ones(num_train_timesteps)
    weights[: max(1, round(portion * num_train_timesteps))] *= multiplier
    return weights


def snr_weights(noise_scheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (B,) (Hang et al., ICCV 2023; diffusers' ``--snr_gamma``): each step's MSE weighted as the
    noise MSE times min(SNR, γ)/SNR, written for the scheduler's target: min(SNR, γ)/SNR for the noise, min(SNR, γ)/(SNR + 1)
    for the velocity, min(SNR, γ) for the clean latents; SNR = ᾱ_t / (1 − ᾱ_t); γ > 0 (``run`` checks it)."""
    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    capped = torch.clamp(snr, max=float(snr_gamma))
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        return capped / (snr + 1)
    return capped if kind == "sample" else capped / snr


def diffusion_loss(model: VisionModel, features: dict[str, torch.Tensor], noise_scheduler, weights: torch.Tensor | None = None,
                   snr_gamma: float | None = None) -> torch.Tensor:
    """MSE between the target and the prediction at a drawn step (the model maps it to its backbone's time input): steps
    drawn uniformly or with ``weights`` (T,) (:func:`timestep_weights`); each sample's MSE weighted by
    :func:`snr_weights` when ``snr_gamma`` is set."""
    latents = features["latents"]
    noise = torch.randn_like(latents)
    if weights is None:
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    else:
        timesteps = torch.multinomial(weights, latents.shape[0], replacement=True).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(noise_scheduler, latents, noise, timesteps)
    prediction = model(noisy, timesteps, features).float()
    if snr_gamma is None:
        return F.mse_loss(prediction, target.float())
    per_sample = F.mse_loss(prediction, target.float(), reduction="none").flatten(1).mean(1)
    return (per_sample * snr_weights(noise_scheduler, timesteps, snr_gamma)).mean()


def make_loss_fn(noise_scheduler, encoders: FrozenEncoders | None, weights: torch.Tensor | None = None, snr_gamma: float | None = None):
    """``loss_fn(model, batch)``; with ``encoders`` the batch holds images and prompts, encoded in the step; ``weights``:
    the training steps' draw weights (:func:`timestep_weights`, None: uniform); ``snr_gamma``: min-SNR-γ loss weights
    (:func:`snr_weights`, None: plain MSE)."""
    noise_scheduler.alphas_cumprod = noise_scheduler.alphas_cumprod.float()

    def loss_fn(model, batch):
        features = encoders.encode_batch(batch) if encoders is not None else batch
        return diffusion_loss(model, features, noise_scheduler, weights, snr_gamma)

    return loss_fn


class SampleGrid:
    """Every ``every`` steps, write ``samples/step-NNNNNNN.png``: one row of images for fixed label
    vectors and reference images (DDIM, fixed seeds), on the main process."""

    def __init__(self, accelerator, encoders: FrozenEncoders | None, model_cfg, index, reference, out_dir: Path, every: int, n: int, steps: int, guidance: float, seed: int):
        from cxr_irgen.data.imageio import read_image
        from cxr_irgen.data.labels import CHEXPERT_LABELS

        rows = index.drop_duplicates(subset=list(CHEXPERT_LABELS)).head(n)
        self.labels = list(rows[list(CHEXPERT_LABELS)].to_numpy(np.float32))
        self.references = None
        if reference is not None:
            ids = [reference.lookup(v, exclude=d, seed=seed) for v, d in zip(self.labels, rows["dicom_id"])]
            self.references = torch.stack([read_image(reference.image_path(i), model_cfg.image_size) for i in ids])
        self.accelerator, self.encoders, self.model_cfg = accelerator, encoders, model_cfg
        self.out_dir, self.every, self.steps, self.guidance, self.seed = Path(out_dir), every, steps, guidance, seed

    def __call__(self, step: int, model) -> None:
        if not self.every or step % self.every or not self.accelerator.is_main_process:
            return
        from torchvision.utils import save_image

        from cxr_irgen.vision.pipeline import VisionPipeline

        unwrapped = self.accelerator.unwrap_model(model)
        unwrapped.eval()
        pipe = VisionPipeline(self.encoders, unwrapped, self.model_cfg.noise_schedule, self.model_cfg.image_size, device=self.accelerator.device)
        images = pipe(self.labels, self.references, seeds=[self.seed + i for i in range(len(self.labels))], steps=self.steps, guidance=self.guidance, scheduler="ddim")
        unwrapped.train()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_image(images, self.out_dir / f"step-{step:07d}.png", nrow=len(self.labels))


def _frozen_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(str(mixed_precision), torch.float32)


def run(cfg) -> None:
    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.data.datasets import VisionDataset, collate
    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.data.reference import ReferenceIndex
    from cxr_irgen.data.selections import vision_train
    from cxr_irgen.utils.training import make_accelerator, train
    from cxr_irgen.vision.features import CachedFeatureDataset, cache_features, check_feature_cache

    model_cfg = cfg.vision.model
    scheduler_kwargs(model_cfg.noise_schedule)  # an unknown schedule kind or prediction type fails before any model loads
    weights = timestep_weights(cfg.timestep_bias, int(model_cfg.noise_schedule.num_train_timesteps))
    snr_gamma = None if cfg.snr_gamma is None else float(cfg.snr_gamma)
    if snr_gamma is not None and snr_gamma <= 0:
        raise UserError(f"snr_gamma={snr_gamma} must be above 0 (null: plain MSE, the paper's)")
    if cfg.features and not cfg.prepare:
        check_feature_cache(cfg.features, model_cfg)
    out = run_dir(cfg)
    accelerator = make_accelerator(cfg.trainer, cfg.seed)
    encoders = build_encoders(model_cfg)
    index = vision_train(load_table(cfg.data))
    if cfg.get("max_images"):
        index = index.head(int(cfg.max_images))

    if cfg.prepare:
        cache_dir = Path(cfg.features or out / "features")
        if accelerator.is_main_process:
            cache_features(encoders, index, model_cfg, cache_dir, batch_size=cfg.trainer.batch_size, device=accelerator.device)
        accelerator.wait_for_everyone()
        return

    model = build_trainable(model_cfg, encoders)
    warning = guidance_warning(model.conditioning.dropout, cfg.sample_guidance)
    if warning:
        log.warning("%s (sample grid; generate warns again)", warning)
    if cfg.trainer.gradient_checkpointing:
        model.backbone.enable_gradient_checkpointing()
    apply_speed_levers(model.backbone, cfg.trainer)
    if cfg.features and not cfg.sample_every:
        encoders = None  # training from the cache never runs the frozen encoders: free their memory (2 GB at SD size)
    else:
        encoders.to(accelerator.device, _frozen_dtype(cfg.trainer.mixed_precision))
    uses_reference = model.conditioning.uses_image
    reference = ReferenceIndex.from_index(index, exclude_rule=str(model_cfg.reference.exclude)) if uses_reference else None
    if reference is not None:
        counts = reference.rule_counts(index[list(CHEXPERT_LABELS)].to_numpy(np.float32), index["dicom_id"].tolist())
        log.info("reference rule per training image (reference.exclude=%s): %s", reference.exclude_rule, counts)
    clock = EpochClock()
    if cfg.features:
        dataset, collate_fn, step_encoders = CachedFeatureDataset(cfg.features, model_cfg, uses_reference, cfg.seed, clock), None, None
    else:
        dataset = VisionDataset(index, model_cfg.image_size, reference, cfg.seed, skip_bad=bool(cfg.data.get("skip_bad", False)), epoch_fn=clock)
        collate_fn, step_encoders = collate, encoders
    grid = SampleGrid(accelerator, encoders, model_cfg, index, reference, out / "samples", cfg.sample_every, cfg.sample_n, cfg.sample_steps, cfg.sample_guidance, cfg.seed)
    loss_fn = make_loss_fn(build_noise_scheduler(model_cfg), step_encoders, weights, snr_gamma)
    result = train(accelerator, model, dataset, loss_fn, cfg.trainer, out, cfg.seed, collate_fn=collate_fn, on_step=grid, on_epoch=clock.set)
    if accelerator.is_main_process:
        saved = accelerator.unwrap_model(model).save_pretrained(out / MODEL_DIR, model_cfg)
        log.info("trained %d steps (final loss %.4f); model saved to %s", result.step, result.losses[-1] if result.losses else float("nan"), saved)
    accelerator.wait_for_everyone()
