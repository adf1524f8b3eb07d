"""cxr_irgen.utils: the ground floor every layer may use (it imports only :mod:`cxr_irgen.errors`).

- :mod:`~cxr_irgen.utils.files`: atomic writes (files and folders); :mod:`~cxr_irgen.utils.device`: ``device=auto``.
- :mod:`~cxr_irgen.utils.registry`: the one registry class of every model family, and the packaged YAMLs by name.
- :mod:`~cxr_irgen.utils.rundir`, :mod:`~cxr_irgen.utils.checkpoint`, :mod:`~cxr_irgen.utils.training`,
  :mod:`~cxr_irgen.utils.progress`, :mod:`~cxr_irgen.utils.speed`: run folders, resumable checkpoints, the training loop.
"""
