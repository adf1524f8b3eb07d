"""Report text → CheXpert labels and scores: a leaf that ``report_models`` (training rewards, validation)
and ``eval`` (``cxr-irgen evaluate``) both use; it imports only ``data.labels`` and ``utils``.

- :mod:`~cxr_irgen.text.labeler`: rule-based CheXpert labeler and ``cxr-irgen label-reports``;
  :mod:`~cxr_irgen.text.chexbert`: the optional CheXbert backend.
- :mod:`~cxr_irgen.text.text_metrics`: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR.
- :mod:`~cxr_irgen.text.chexpert_f1`: CheXpert F1 of generated vs reference reports with bootstrap CIs.
"""
