"""Evaluation speed on CPU: labeler throughput, FID and AUROC wall time on N images at 256 px.

    .venv/bin/python benchmarks/eval.py [--n 1000] [--threads 1] [--batch 8]

- Labeler: reports/s of the rule-based CheXpert labeler on the real IU X-ray reports
  (findings + impression), vs the obvious reference that compiles its patterns for every
  report (``re.purge()`` + recompiling, same rules, same output).
- FID: XRV DenseNet-121 ``features2`` (random init; the weights do not change the cost)
  of N generated + N real images at 256 px (resized to 224 inside), batched, plus the
  float64 Fréchet distance; the reference is the same extractor one image at a time
  (timed on a subset and scaled).
- AUROC: the paper protocol (5 pathologies, up to N/2 positives vs N/2 No Finding) with an
  XRV DenseNet-121 classifier on N labelled images.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import torch


def bench_labeler() -> dict:
    from cxr_irgen.data.iu_xray import load_iu_reports
    from cxr_irgen.eval import labeler

    reports = load_iu_reports()
    texts = [t for t in (reports["findings"] + " " + reports["impression"]).str.strip() if t]
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


def bench_fid(n: int, size: int, batch: int) -> dict:
    from cxr_irgen.eval.features import XRVFeatures
    from cxr_irgen.eval.image_metrics import fid_from_features

    extractor = XRVFeatures().eval()
    generated, real = _images(n, size, 0), _images(n, size, 1)
    start = time.perf_counter()
    feats = [torch.cat([extractor(x[i:i + batch]) for i in range(0, n, batch)]).double().numpy() for x in (generated, real)]
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    value = fid_from_features(*feats)
    distance_s = time.perf_counter() - start
    probe = min(32, n)
    start = time.perf_counter()
    for i in range(probe):
        extractor(generated[i:i + 1])
    one_by_one_s = (time.perf_counter() - start) / probe * 2 * n
    return {"n_generated": n, "n_real": n, "resolution": size, "features": extractor.name, "fid": round(value, 3),
            "features_s": round(features_s, 2), "frechet_s": round(distance_s, 2), "total_s": round(features_s + distance_s, 2),
            "one_image_at_a_time_features_s_estimated": round(one_by_one_s, 2), "batching_speedup": round(one_by_one_s / features_s, 2)}


def bench_auroc(n: int, size: int, batch: int) -> dict:
    from cxr_irgen.data.labels import LABEL_INDEX, canonical_name
    from cxr_irgen.eval.auroc import PAPER_PATHOLOGIES, needed_indices, protocol_auroc, protocol_groups
    from cxr_irgen.eval.classifier import Classifier
    from cxr_irgen.eval.features import xrv_densenet

    rng = np.random.default_rng(0)
    labels = np.full((n, 14), np.nan, dtype=np.float32)
    labels[: n // 2, LABEL_INDEX["No Finding"]] = 1.0
    for row in range(n // 2, n):
        labels[row, LABEL_INDEX[canonical_name(PAPER_PATHOLOGIES[rng.integers(5)])]] = 1.0
    model = xrv_densenet()
    classifier = Classifier(model, list(model.pathologies), 224, "xrv densenet121 (random init)")
    images = _images(n, size, 2)
    start = time.perf_counter()
    groups = protocol_groups(labels, PAPER_PATHOLOGIES, n // 2, seed=0)
    indices = needed_indices(groups)
    logits = torch.cat([classifier.logits(images[indices[i:i + batch]]) for i in range(0, len(indices), batch)]).numpy()
    result = protocol_auroc(dict(zip(indices.tolist(), logits)), groups, classifier.pathologies)
    return {"n_images": int(len(indices)), "resolution": size, "classifier": classifier.name, "total_s": round(time.perf_counter() - start, 2),
            "mean_auroc_random_weights": round(result["mean"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch_threads": args.threads, "labeler": bench_labeler()}
    print(json.dumps(out["labeler"]), flush=True)
    out["fid"] = bench_fid(args.n, args.size, args.batch)
    print(json.dumps(out["fid"]), flush=True)
    out["auroc"] = bench_auroc(args.n, args.size, args.batch)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
