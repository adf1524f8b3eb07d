"""Sampling throughput: our VisionPipeline vs diffusers' StableDiffusionPipeline built from the same
U-Net, VAE, text encoder, tokenizer, scheduler, steps, guidance and batch (text conditioning, since
StableDiffusionPipeline has no reference-image input).

    python benchmarks/vision_sample.py                         # CPU, tiny random components
    python benchmarks/vision_sample.py --model unet-sd14-random --batch 2 --steps 10 --repeats 1   # CPU, SD v1.4 size
    python benchmarks/vision_sample.py --model unet-sd14-random --device cuda --batch 16 --steps 50
The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import common
import torch
from omegaconf import OmegaConf

TINY_VAE = {"kind": "sd", "config": {"block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
                                     "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 8, "latent_channels": 4}}


def main() -> None:
    from diffusers import StableDiffusionPipeline

    from cxr_irgen.data.labels import labels_to_prompt, parse_labels
    from cxr_irgen.vision.model import build_encoders, build_trainable, vision_model_config
    from cxr_irgen.vision.pipeline import VisionPipeline, build_sampler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet-tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scheduler", default="pndm", choices=("pndm", "ddim", "dpm++"))
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype, torch.float16 if device.type == "cuda" else torch.float32)

    cfg = vision_model_config(args.model)
    cfg.conditioning.mode = "text"
    if cfg.vae.kind != "sd":
        cfg.vae = OmegaConf.create(TINY_VAE)
    encoders = build_encoders(cfg)
    model = build_trainable(cfg, encoders).to(device, dtype)
    encoders.to(device, dtype)
    ours = VisionPipeline(encoders, model, cfg.noise_schedule, cfg.image_size, device=device)
    labels = [parse_labels("Cardiomegaly=1, Edema=0")] * args.batch
    seeds = list(range(args.batch))
    theirs = StableDiffusionPipeline(
        vae=encoders.vae.vae, text_encoder=encoders.text_encoder.model, tokenizer=encoders.text_encoder.tokenizer, unet=model.backbone,
        scheduler=build_sampler(args.scheduler, cfg.noise_schedule), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    theirs.set_progress_bar_config(disable=True)
    prompts = [labels_to_prompt(v) for v in labels]

    def synced(images):
        if device.type == "cuda":
            torch.cuda.synchronize()
        return images

    def run_ours():
        return synced(ours(labels, None, seeds, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler))

    def run_theirs():
        generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        return synced(theirs(prompts, height=cfg.image_size, width=cfg.image_size, num_inference_steps=args.steps, guidance_scale=args.guidance,
                             generator=generators, output_type="pt").images)

    with torch.no_grad():
        best = common.alternate({"diffusers": run_theirs, "ours": run_ours}, args.repeats + 1)  # the first round warms up
    seconds_ours, seconds_theirs = best["ours"], best["diffusers"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else common.peak_rss_mb()
    print(json.dumps(common.result(
        "vision_sample", {"images_per_s": args.batch / seconds_ours}, {"diffusers_sd_pipeline_images_per_s": args.batch / seconds_theirs},
        seconds_theirs / seconds_ours, "images/s of VisionPipeline over StableDiffusionPipeline, same U-Net, scheduler, steps, guidance, batch and dtype (best of alternating rounds)",
        peak_memory_mb=round(peak, 1), peak_memory_is="max CUDA memory allocated" if device.type == "cuda" else "peak RSS of the process (both pipelines)",
        model=args.model, device=args.device, dtype=str(dtype).replace("torch.", ""), threads=torch.get_num_threads(), batch=args.batch, steps=args.steps,
        scheduler=args.scheduler, guidance=args.guidance, image_size=int(cfg.image_size), prompts="one label vector repeated over the batch (the AUROC protocol's case)",
    )))


if __name__ == "__main__":
    main()
