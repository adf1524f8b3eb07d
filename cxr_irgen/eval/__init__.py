"""Evaluation (DESIGN 1.4). Never imports the vision or language training code.

- :mod:`cxr_irgen.text` (a layer below, shared with ``report_models``): the CheXpert labeler (rules, CheXbert),
  BLEU/ROUGE-L/CIDEr-D/METEOR and CheXpert F1; ``report_guards``: distinct / copy shares.
- ``features`` + ``image_metrics``: FID feature extractors (XRV, Inception from NVIDIA's TorchScript file or
  torch-fidelity's), Fréchet distance, PSNR/SSIM, MS-SSIM diversity.
- ``kid``: Kernel Inception Distance (torch-fidelity's subsets); ``prdc``: precision/recall/density/coverage (k = 5).
- ``memorisation``: nearest training image of each generated image by feature cosine and by SSIM.
- ``utility``: classifiers trained on real / synthetic / real+synthetic images, AUROC on real test images;
  ``report_utility``: report generators trained on real / synthetic / real+synthetic pairs, scored on real test images.
- ``auroc`` + ``classifier``: the paper's AUROC protocol and its XRV DenseNet (``cxr-irgen train-classifier``).
- ``score``: evaluation without a config — ``evaluate_images``, ``evaluate_reports``, ``evaluate_pairs`` return the
  numbers ``cxr-irgen evaluate`` prints; ``sources``: image inputs (folders, paths, arrays, tensors); ``agreement``:
  image–report–label agreement; ``provenance``: package versions and weights hashes.
- ``generated``, ``tables``, ``evaluate``: ``cxr-irgen evaluate`` (inputs, paper-style tables, orchestration).

The metric functions below are importable from here (loaded on first use, so importing this
package stays light).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fid_from_features": "image_metrics", "frechet_distance": "image_metrics", "psnr": "image_metrics", "ssim": "image_metrics",
    "ms_ssim": "image_metrics", "check_unit_images": "image_metrics",
    "kid_from_features": "kid", "prdc_from_features": "prdc", "nearest_training_images": "memorisation",
    "downstream_utility": "utility", "utility_table": "tables", "bootstrap_auroc": "utility",
    "downstream_report_utility": "report_utility", "report_utility_table": "tables",
    "build_feature_extractor": "features", "NvidiaInceptionFeatures": "features", "InceptionFeatures": "features", "XRVFeatures": "features",
    "protocol_auroc": "auroc",
    "evaluate_images": "score", "evaluate_reports": "score", "evaluate_pairs": "score", "ImageSettings": "score",
    "label_agreement": "agreement",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
