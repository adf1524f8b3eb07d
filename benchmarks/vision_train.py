"""Training throughput of the vision step: ours (features cached, backbone only, bf16 on CUDA) vs a
plain reference loop that encodes VAE + CLIP text + CLIP image every step in fp32 (no cache).

Each variant runs in its own child process (so peak memory is its own), same model, batch and
steps. On CUDA also reports the backbone's model FLOP utilisation (FLOPs counted by
torch.utils.flop_counter over forward + backward, divided by time and the GPU's dense bf16 peak).

    python benchmarks/vision_train.py                                  # CPU, tiny models
    python benchmarks/vision_train.py --model unet-sd14-random --device cuda --batch 32
The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def _batch(cfg, batch_size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    size = cfg.image_size
    return {
        "prompt": [f"A chest X-Ray image with cardiomegaly, without edema and pneumothorax {i}" for i in range(batch_size)],
        "pixel_values": torch.rand(batch_size, 1, size, size, generator=g).to(device),
        "reference_pixels": torch.rand(batch_size, 1, size, size, generator=g).to(device),
    }


def _peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(variant: str, model_name: str, device_name: str, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from cxr_irgen.vision.model import build_encoders, build_noise_scheduler, build_vision_model, model_config
    from cxr_irgen.vision.train import make_loss_fn

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    cfg = model_config(model_name)
    encoders = build_encoders(cfg)
    model = build_vision_model(cfg, encoders).to(device).train()
    batch = _batch(cfg, batch_size, device)
    ours = variant == "ours"
    amp = ours and device.type == "cuda"
    if ours:
        encoders.to(device, torch.bfloat16 if amp else torch.float32)
        cached = {k: v.float() for k, v in encoders.encode_batch(batch).items()}
        del encoders
        loss_fn, inputs = make_loss_fn(build_noise_scheduler(cfg), None), cached
    else:
        encoders.to(device)
        loss_fn, inputs = make_loss_fn(build_noise_scheduler(cfg), encoders), batch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"images_per_s": batch_size * steps / seconds, "peak_memory_mb": _peak_memory_mb(device)}
    if device.type == "cuda" and ours:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        result.update(gpu=name, train_flops_per_step=flops, mfu=(flops * steps / seconds) / peak if peak else None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet-tiny", help="vision/model config (unet-tiny, uvit-tiny, unet-sd14-random, ...)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for variant in ("reference", "ours"):
        with ctx.Pool(1) as pool:
            results[variant] = pool.apply(_run, (variant, args.model, args.device, args.batch, args.steps, args.warmup, args.threads))
        print(variant, results[variant], flush=True)
    out = {
        "benchmark": "vision_train", "model": args.model, "device": args.device, "threads": args.threads or "default", "batch": args.batch, "steps": args.steps,
        "ours": results["ours"], "reference_plain_loop_fp32": results["reference"],
        "speedup": results["ours"]["images_per_s"] / results["reference"]["images_per_s"],
        "memory_ratio": results["ours"]["peak_memory_mb"] / results["reference"]["peak_memory_mb"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
