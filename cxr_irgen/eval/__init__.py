"""Evaluation (DESIGN 1.4). Never imports the vision or language training code.

- ``labeler``: rule-based CheXpert labeler and ``cxr-irgen label-reports``; ``chexbert``: optional CheXbert backend.
- ``text_metrics``: BLEU-1..4, ROUGE-L (coco, rouge_score), CIDEr-D, METEOR; ``report_guards``: distinct / copy shares.
- ``chexpert_f1``: CheXpert F1 of generated vs reference reports with bootstrap CIs.
- ``features`` + ``image_metrics``: FID feature extractors, Fréchet distance, PSNR/SSIM, MS-SSIM diversity.
- ``auroc`` + ``classifier``: the paper's AUROC protocol and its XRV DenseNet (``cxr-irgen train-classifier``).
- ``generated``, ``tables``, ``evaluate``: ``cxr-irgen evaluate`` (inputs, paper-style tables, orchestration).
"""
