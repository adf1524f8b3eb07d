"""Vision training throughput: `cxr-irgen train-vision` itself vs diffusers' train_text_to_image.py recipe loop.

* ours: the library's real path, run as the CLI in a child process: `train-vision prepare=true` caches
  VAE latents and CLIP features of phantom images once (not timed; its wall time is reported), then
  `train-vision features=<cache>` trains with its Accelerate loop, DataLoader over the feature cache
  (reference embeddings drawn per item), AdamW, gradient clipping, loss gather and TensorBoard logging.
  Step times come from the wall times of the per-step TensorBoard loss events (steps after
  ``--warmup``), so start-up and the final checkpoint write are excluded.
* reference: the recipe loop of diffusers' ``examples/text_to_image/train_text_to_image.py`` in a child
  process: each step encodes its images with the VAE, its prompts with the CLIP text encoder and its
  reference images with the CLIP image encoder, then the same U-Net forward/backward and AdamW step;
  frozen encoders in the training precision, the U-Net under autocast, as the recipe does. Its images
  come from memory (no decoding), which favours it.

Same model (``--model``, seeded random weights), batch, precision (``no`` = fp32, or bf16) and device for
both. Speed levers (``--levers``) rerun ours with one trainer switch each on, and report its effect.
On CUDA the reference child also counts the U-Net's training FLOPs per step (torch.utils.flop_counter),
giving ours' model FLOP utilisation against the GPU's dense bf16 peak.

    python benchmarks/vision_train.py --model unet-sd14-random --batch 1 --steps 2 --warmup 1 --levers none --split-reference   # CPU, SD v1.4 size
    python benchmarks/vision_train.py --model unet-sd14-random --device cuda --batch 32 --precision bf16 --steps 20 --warmup 5
    python benchmarks/vision_train.py --model unet-tiny --image-size 32 --batch 4 --steps 3 --levers none    # smoke

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
LEVERS = {"channels_last": "trainer.channels_last=true", "fused_adamw": "trainer.fused_adamw=true", "compile": "trainer.compile=true",
          "no_tf32": "trainer.tf32=false", "num_workers_2": "trainer.num_workers=2", "persistent_workers": "trainer.num_workers=2 trainer.persistent_workers=true"}


def run_child(argv: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``argv``; (wall seconds, the child's peak resident memory in MiB, its stdout). Fails loudly with its output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if proc.returncode is None and proc.poll() is None:  # interrupted: do not leave the child running
                proc.kill()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(argv)}\n{text[-4000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, text


def step_seconds(run_dir: Path, warmup: int) -> list[float]:
    """Seconds of each logged step after ``warmup``, from the wall times of the TensorBoard loss events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    walls = [e.wall_time for e in sorted(events.Scalars("train/loss"), key=lambda e: e.step)]
    return [b - a for a, b in zip(walls[warmup - 1 :], walls[warmup:])]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cxr_irgen.cli", *args]


def _reference_child(args) -> None:
    """The diffusers recipe loop (see the module docstring); prints one JSON line. ``--reference-part encoders`` times
    only each step's encoding (no U-Net in memory), ``unet`` only the U-Net step on features encoded once before."""
    import torch
    import torch.nn.functional as F

    from cxr_irgen.vision.model import build_encoders, build_noise_scheduler, build_trainable, vision_model_config

    device = torch.device(args.device)
    cfg = vision_model_config(args.model, [f"image_size={args.image_size}"] if args.image_size else [])
    encoders = build_encoders(cfg)
    model = build_trainable(cfg, encoders).to(device).train() if args.reference_part != "encoders" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
    encoders.to(device, dtype)
    noise_scheduler = build_noise_scheduler(cfg)
    g = torch.Generator().manual_seed(0)
    n, size = args.batch * 4, int(cfg.image_size)
    images = torch.rand(n, 1, size, size, generator=g)
    references = torch.rand(n, 1, size, size, generator=g)
    prompts = [f"A chest X-Ray image with cardiomegaly, without edema and pneumothorax {i}" for i in range(n)]
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=args.batch, shuffle=True, drop_last=True, generator=g)
    amp = dtype != torch.float32

    @torch.no_grad()
    def encode(ids):
        pixels, refs = images[ids].to(device, dtype), references[ids].to(device, dtype)
        features = encoders.text_encoder([prompts[i] for i in ids.tolist()])
        features["image_embeds"] = encoders.image_encoder(refs) if encoders.image_encoder is not None else None
        return encoders.vae.encode(pixels).float(), {k: v.float() for k, v in features.items() if v is not None}

    if args.reference_part == "unet":  # encode every item once, then free the encoders
        encoded = [encode(torch.tensor([i])) for i in range(n)]
        encode = lambda ids: (torch.cat([encoded[i][0] for i in ids]), {k: torch.cat([encoded[i][1][k] for i in ids]) for k in encoded[0][1]})
        encoders = None
    if model is not None:
        unet, conditioning = model.backbone, model.conditioning
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5, betas=(0.9, 0.999), weight_decay=0.01)

    def step(ids):
        latents, features = encode(ids)
        if model is None:
            return latents.sum()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            context = conditioning(features)
            pred = unet(noisy, timesteps, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, batches = [], iter(())
    for _ in range(args.warmup + args.steps):
        ids = next(batches, None)
        if ids is None:
            batches = iter(loader)
            ids = next(batches)
        sync()
        start = time.perf_counter()
        step(ids).item()
        sync()
        times.append(time.perf_counter() - start)
    result = {"step_s": times[args.warmup :]}
    if device.type == "cuda" and args.reference_part == "all":
        from torch.utils.flop_counter import FlopCounterMode

        result["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        latent = size // encoders.vae.downscale
        latents = torch.randn(args.batch, encoders.vae.latent_channels, latent, latent, device=device)
        context = torch.randn(args.batch, conditioning.num_tokens + 77, encoders.text_encoder.hidden_size, device=device)
        with FlopCounterMode(display=False) as counter, torch.autocast("cuda", dtype=dtype, enabled=amp):
            unet(latents, torch.zeros(args.batch, device=device, dtype=torch.long), encoder_hidden_states=context).sample.float().mean().backward()
        result["unet_train_flops_per_step"] = counter.get_total_flops()
    print(json.dumps(result))


def _ours(args, work: Path, env: dict, features: Path, name: str, extra: list[str]) -> dict:
    run_dir = work / f"ours-{name}"
    overrides = [f"data.root={work / 'phantoms'}", f"vision/model={args.model}", f"features={features}", f"trainer.batch_size={args.batch}",
                 f"trainer.max_steps={args.warmup + args.steps}", "trainer.log_every=1", "trainer.checkpoint_every=1000000", "trainer.keep_checkpoints=1",
                 f"trainer.mixed_precision={args.precision}", f"trainer.num_workers={args.num_workers}", "sample_every=0", f"hydra.run.dir={run_dir}", *extra]
    overrides += [f"vision.model.image_size={args.image_size}"] if args.image_size else []
    wall, peak, _ = run_child(cli("train-vision", *overrides), env)
    steps = step_seconds(run_dir, args.warmup)
    result = {"step_s": steps, "images_per_s": args.batch * len(steps) / sum(steps), "peak_rss_mb": round(peak), "wall_s_with_startup_and_checkpoint": round(wall, 1)}
    shutil.rmtree(run_dir, ignore_errors=True)  # SD-size checkpoints are large
    print(name, json.dumps({k: v for k, v in result.items() if k != "step_s"}), flush=True)
    return result


def _reference(args, env: dict) -> dict:
    """The reference in one child, or (``--split-reference``) its encoders and its U-Net step in two children one after
    the other, step times added: each part then fits in the memory the whole recipe would need at once."""
    parts = ("encoders", "unet") if args.split_reference else ("all",)
    runs = {}
    for part in parts:
        argv = [sys.executable, __file__, "--reference-child", *sys.argv[1:], "--device", args.device, "--precision", args.precision, "--reference-part", part]
        _, peak, text = run_child(argv, env)
        runs[part] = {**json.loads(text.strip().splitlines()[-1]), "peak_rss_mb": round(peak)}
    reference = dict(runs[parts[-1]])
    reference["step_s"] = [sum(t) for t in zip(*(r["step_s"] for r in runs.values()))]
    reference["images_per_s"] = args.batch * len(reference["step_s"]) / sum(reference["step_s"])
    if args.split_reference:
        reference["parts"] = {part: {"step_s": r["step_s"], "peak_rss_mb": r["peak_rss_mb"]} for part, r in runs.items()}
        reference["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs.values())
        reference["peak_rss_mb_is"] = "the larger part's; the recipe in one process holds both parts' weights at once"
    return reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet-sd14-random", help="vision/model config (unet-sd14-random, uvit-tiny, unet-tiny, ...)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument("--precision", default=None, choices=("no", "bf16", "fp16"), help="default: bf16 on CUDA, no (fp32) on CPU")
    parser.add_argument("--image-size", type=int, default=0, help="override the model's image size (0: the model's own, 256 for SD)")
    parser.add_argument("--images", type=int, default=0, help="phantom images to cache (default: 4 batches)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--levers", default="channels_last,fused_adamw", help=f"comma list of {', '.join(LEVERS)}, or none")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the children (0: unchanged)")
    parser.add_argument("--split-reference", action="store_true", help="time the reference's encoders and U-Net step in two children (less memory)")
    parser.add_argument("--reference-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference-part", default="all", choices=("all", "encoders", "unet"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "no")
    args.warmup = max(1, args.warmup)
    if args.reference_child:
        return _reference_child(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit stops the children too (run_child's finally)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0") if args.device == "cuda" else ""}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    levers = [] if args.levers == "none" else args.levers.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-vision-train-") as tmp:
        work = Path(tmp)
        n_images = args.images or 4 * args.batch
        run_child(cli("make-phantoms", f"out={work / 'phantoms'}", f"n={max(48, 4 * n_images)}", f"size={args.image_size or 256}", f"hydra.run.dir={work / 'phantoms-run'}"), env)
        prepare = [f"data.root={work / 'phantoms'}", f"vision/model={args.model}", "prepare=true", f"max_images={n_images}", f"trainer.batch_size={args.batch}",
                   f"trainer.mixed_precision={args.precision}", f"hydra.run.dir={work / 'prepare'}"]
        prepare += [f"vision.model.image_size={args.image_size}"] if args.image_size else []
        prepare_s, _, _ = run_child(cli("train-vision", *prepare), env)
        print(f"feature cache of up to {n_images} images written in {prepare_s:.0f} s", flush=True)
        features = work / "prepare" / "features"
        ours = _ours(args, work, env, features, "default", [])
        reference = _reference(args, env)
        print("reference", json.dumps({k: v for k, v in reference.items() if k != "step_s"}), flush=True)
        lever_results = {}
        for lever in levers:
            lever_results[lever] = _ours(args, work, env, features, lever, LEVERS[lever].split())
            lever_results[lever]["speedup_vs_ours_default"] = round(lever_results[lever]["images_per_s"] / ours["images_per_s"], 3)
    mfu = None
    if args.device == "cuda" and "unet_train_flops_per_step" in reference:
        import torch

        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in torch.cuda.get_device_name()), None)
        mfu = reference["unet_train_flops_per_step"] / (sum(ours["step_s"]) / len(ours["step_s"])) / peak if peak else None
    out = common.result(
        "vision_train", ours, reference, ours["images_per_s"] / reference["images_per_s"],
        "images/s of cxr-irgen train-vision on the feature cache over the diffusers recipe loop (encoders every step)",
        model=args.model, device=args.device, precision=args.precision, batch=args.batch, timed_steps=args.steps, warmup_steps=args.warmup,
        feature_cache_s=round(prepare_s, 1), peak_memory_ratio=round(ours["peak_rss_mb"] / reference["peak_rss_mb"], 3),
        levers=lever_results, sdpa="diffusers U-Net attention and the U-ViT both use torch's scaled_dot_product_attention", mfu=mfu,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
