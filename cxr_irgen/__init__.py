"""cxr-irgen: synthetic chest X-ray images paired with radiology reports (CXR-IRGen), as a library.

Every name below loads on first use, so ``import cxr_irgen`` imports no torch. Images are tensors
(N, 1, H, W) in [0, 1] (or PIL images, or paths); label vectors are (14,) float arrays in CheXpert
order (``CHEXPERT_LABELS``) holding 1 positive, 0 negative, -1 uncertain, NaN not mentioned.

Generating pairs
    PairPipeline          ``PairPipeline.from_run_dirs(vision=RUN, language=RUN)(labels, n=, seeds=, sampler=, steps=, guidance=)``
    PairPipelineOutput    what a call returns: images (PIL, and (N, 1, H, W)), reports, labels (N, 14), prompts, seeds, reference ids

Labels and prompts
    CHEXPERT_LABELS       the 14 observation names, in the order of every label vector
    parse_labels          ``"Cardiomegaly=1, Edema=0"`` (or a dict) → (14,) vector
    labels_to_prompt      (14,) vector → ``"A chest X-Ray image with cardiomegaly, without edema"``
    prompt_to_labels      that prompt → (14,) vector
    label_reports         N report texts → (N, 14) CheXpert labels (the rule labeler)

Report generators (images → reports)
    load_report_generator any saved report generator or report run dir → callable ``generator(images (B, 1, H, W))`` → B strings
    list_report_models    names of the report-generator models
    create_report_model   an untrained encoder × decoder generator from an encoder name, a decoder name and a vocabulary

Vision models (labels → images)
    list_vision_models    names of the vision models (one YAML each in ``configs/vision/model/``)
    build_vision_model    name → its config, frozen encoders and a fresh trainable model

Evaluation without a config (the numbers ``cxr-irgen evaluate`` prints, as dicts)
    evaluate_images       N generated images ((N, 1, H, W), paths or a folder) vs real ones: FID, KID, PRDC, PSNR/SSIM,
                          diversity, AUROC protocol, memorisation
    evaluate_reports      N generated vs N reference reports: BLEU, ROUGE-L, CIDEr, CheXpert F1, label agreement, guards
    evaluate_pairs        N images, N reports, (N, 14) requested labels: agreement of classifier, labeler and request

Errors
    UserError             every bad input (a label, a path, a run of the wrong kind) raises it, before a model loads

``register_resolver()`` registers the ``${weights_path:...}`` config resolver (done on import).
"""

from __future__ import annotations

import importlib

from cxr_irgen.weights import register_resolver

__version__ = "0.1.0"

register_resolver()  # ${weights_path:...} in configs/ resolves wherever the configs are read

_EXPORTS = {
    "PairPipeline": "pipeline", "PairPipelineOutput": "pipeline",
    "CHEXPERT_LABELS": "data.labels", "parse_labels": "data.labels", "labels_to_prompt": "data.labels", "prompt_to_labels": "data.labels",
    "label_reports": "text.labeler",
    "load_report_generator": "report_models", "list_report_models": "report_models", "create_report_model": "report_models",
    "list_vision_models": "vision", "build_vision_model": "vision",
    "evaluate_images": "eval", "evaluate_reports": "eval", "evaluate_pairs": "eval",
    "UserError": "errors",
}
__all__ = sorted([*_EXPORTS, "register_resolver"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
