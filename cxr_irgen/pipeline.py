"""``PairPipeline``: label vectors → prompt + reference image → image → report, from two run directories.

    pipe = PairPipeline.from_run_dirs(vision="outputs/train_vision/RUN", language="outputs/train_language/PRIOR")
    out = pipe(["Cardiomegaly=1, Edema=0", "No Finding=1"], n=2, seeds=0, steps=50)
    out.images[0].save("pair.png"); out.reports[0]; out.image_tensor.shape   # (4, 1, H, W) in [0, 1]

The vision run directory is the unit: reference images come from the data it was trained on, with its
selection (PA train images, its ``max_images``), unless ``data`` names another pool, which is refused when it
differs from the run's unless ``allow_reference_mismatch=True``. The pool is resolved and indexed once, when
the pipeline is built. Image ``i`` depends on its label vector, its seed and the sampler settings only (not on
the batch, up to the float rounding of batched convolutions: ~1e-6, at most one gray level); a sampled report
(``do_sample=True``) is drawn from its pair's seed. ``cxr-irgen generate`` is a thin wrapper over this class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cxr_irgen.data.labels import format_labels, label_vectors
from cxr_irgen.errors import UserError
from cxr_irgen.utils.device import resolve_device
from cxr_irgen.utils.rundir import saved_config


def _existing_run(checkpoint, key: str, what: str) -> Path:
    """``checkpoint`` as a path that exists; a one-line error naming ``key`` otherwise."""
    if not checkpoint:
        raise UserError(f"{key}=RUN_DIR is required ({what})")
    path = Path(str(checkpoint))
    if not path.exists():
        raise UserError(f"{key}={path}: no such folder")
    return path


def vision_model_dir(checkpoint) -> Path:
    """The ``model/`` folder of a train-vision run (or the folder itself); a one-line error for anything else."""
    from cxr_irgen.vision.backbones import BACKBONE_WEIGHTS
    from cxr_irgen.vision.model import BACKBONE_DIR, MODEL_DIR

    path = _existing_run(checkpoint, "vision.checkpoint", "the run directory of `cxr-irgen train-vision`")
    for folder in (path / MODEL_DIR, path):
        if (folder / BACKBONE_DIR / BACKBONE_WEIGHTS).is_file():
            return folder
    raise UserError(f"vision.checkpoint={path} is {_run_kind(path)}, not a finished train-vision run (no {MODEL_DIR}/{BACKBONE_DIR}/{BACKBONE_WEIGHTS})")


def language_run_dir(checkpoint) -> Path:
    """A train-language stage=prior run dir or a report-generator run (train-report-model); a one-line error for anything else."""
    from cxr_irgen.language.prior import PRIOR_FILE
    from cxr_irgen.report_models.interface import GENERATOR_FILE, RUN_SUBDIR

    path = _existing_run(checkpoint, "language.checkpoint", "the run directory of `cxr-irgen train-language stage=prior` or `train-report-model`")
    markers = [path / PRIOR_FILE, path / "prior" / PRIOR_FILE, path / GENERATOR_FILE, path / RUN_SUBDIR / GENERATOR_FILE]
    if not any(marker.is_file() for marker in markers):
        raise UserError(f"language.checkpoint={path} is {_run_kind(path)}, not a train-language stage=prior run (no prior/{PRIOR_FILE}) nor a report-model run ({RUN_SUBDIR}/{GENERATOR_FILE})")
    return path


def _run_kind(path: Path) -> str:
    saved = saved_config(path)
    if saved is None:
        return "not a cxr-irgen run dir"
    if saved.get("stage"):
        return f"a train-language stage={saved.stage} run"
    if saved.get("vision") is not None and saved.vision.get("model") is not None:
        return "a train-vision run" if (path / "model").is_dir() else "an unfinished train-vision run"
    return f"a {'train-classifier' if saved.get('classifier') else 'different'} run"


def _same_pool(a, b) -> bool:
    def where(data):
        root = data.get("root") or data.get("csv")
        return str(data.get("name")), str(Path(str(root)).resolve()) if root else None

    return where(a) == where(b)


def reference_pool(vision, data: Mapping | None = None, reference: bool = True, allow_mismatch: bool = False) -> dict | None:
    """Where reference images come from: ``{"data": data cfg, "max_images": N or None, "from": ...}``; None without references.

    ``vision`` is a train-vision run dir. Text-only models (conditioning mode ``text``) take no reference;
    ``reference=False`` on a reference-conditioned model raises UserError. ``data`` None: the vision run's own training data and selection. ``data`` (a ``data`` config: name,
    root or csv, ...) names another pool, refused when it differs from the run's unless ``allow_mismatch``; a ``data``
    with a name and no root must be the run's data kind.
    """
    from omegaconf import DictConfig, OmegaConf

    from cxr_irgen.vision.model import MODEL_CONFIG

    model_dir = vision_model_dir(vision)
    mode = str(OmegaConf.load(model_dir / MODEL_CONFIG).conditioning.mode)
    if mode == "text":
        return None
    if not reference:
        raise UserError(f"vision.reference=false, but vision.checkpoint={vision} is conditioned on a reference image (conditioning.mode={mode}): "
                        "keep vision.reference=true (only conditioning.mode=text models draw without one)")
    saved = saved_config(model_dir)
    trained = saved.get("data") if saved is not None else None
    if data is not None and not isinstance(data, DictConfig):
        data = OmegaConf.create(dict(data))
    given = data if data is not None and (data.get("root") or data.get("csv")) else None
    if given is None:
        if trained is None:
            raise UserError(f"vision.checkpoint={vision} records no training data (no config.yaml): set data=... data.root=... for the reference images")
        if data is not None and str(data.get("name")) != str(trained.name):
            raise UserError(f"data={data.get('name')} without data.root, but the vision run was trained on data={trained.name}: drop data= or give data.root")
        pool = {"data": trained, "max_images": saved.get("max_images"), "from": "the vision run's training data"}
    else:
        same = trained is not None and _same_pool(given, trained)
        pool = {"data": given, "max_images": saved.get("max_images") if same else None,
                "from": "data.* given to generate" + (" (= the vision run's training data)" if same else "")}
        if trained is not None and not same and not allow_mismatch:
            raise UserError(f"the vision run was trained on data={trained.name} root={trained.get('root')}, but generate got data={given.name} "
                            f"root={given.get('root')}: drop data.* to use the run's own reference pool, or set vision.allow_reference_mismatch=true")
    root = pool["data"].get("root")
    if root and not Path(str(root)).exists():
        raise UserError(f"reference images: data root {root} (data={pool['data'].name}, {pool['from']}) not found; set data.root=")
    return pool


def reference_index(pool: dict):
    """The reference lookup over the pool's vision training selection (DESIGN 1.1: PA train split, the run's max_images)."""
    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.data.reference import ReferenceIndex
    from cxr_irgen.data.selections import vision_train

    index = vision_train(load_table(pool["data"]))
    if pool["max_images"]:
        index = index.head(int(pool["max_images"]))
    return ReferenceIndex.from_index(index)


def plan(labels, n: int = 1, seeds: int | Sequence[int] = 0) -> tuple[np.ndarray, list[int]]:
    """Label vectors (K, 14) repeated ``n`` times each → labels (K·n, 14) and one seed per image.

    ``seeds`` an int: image ``i`` gets ``seeds + i`` (so each image is reproducible alone); a sequence: one per image.
    """
    vectors = label_vectors(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"n={n!r}: give a positive whole number of images per label vector")
    repeated = np.repeat(vectors, int(n), axis=0)
    if isinstance(seeds, (int, np.integer)):
        return repeated, [int(seeds) + i for i in range(len(repeated))]
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(repeated):
        raise UserError(f"{len(seeds)} seeds for {len(repeated)} images ({len(vectors)} label vectors × n={n}): give one seed per image, or one int")
    return repeated, seeds


def write_reports(generator, images: torch.Tensor, seeds: Sequence[int], batch_size: int | None = None, labels=None, **decode: Any) -> list[str]:
    """One report per image (B, 1, H, W) in [0, 1]; ``labels`` (B, 14), the requested vectors, reach a generator that
    ``reads_labels`` (others ignore them). With nucleus sampling (``do_sample=True``) each report is drawn from its own
    seed, one image at a time, so a sampled report is reproducible alone whatever the batch; the caller's random state
    is left as it was."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32)) if labels is not None and generator.reads_labels else None
    if not decode.get("do_sample"):
        return generator(images, batch_size=batch_size or len(images), labels=labels, **decode)
    reports = []
    for i, (image, seed) in enumerate(zip(images, seeds)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            reports += generator(image[None], batch_size=1, seed=int(seed), labels=None if labels is None else labels[i : i + 1], **decode)
    return reports


REDRAW_STRIDE = 1_000_003  # redraw k of the report of seed s draws from seed s + k·REDRAW_STRIDE


def redraw_top_p(top_p: float, k: int, retries: int) -> float:
    """The nucleus mass of redraw ``k`` of ``retries``: it rises linearly from ``top_p`` to 1 (the whole distribution)
    at the last redraw, so a report the model writes almost surely is drawn more freely each time."""
    return float(top_p) + (1.0 - float(top_p)) * k / retries


def redraw_copies(generator, images: torch.Tensor, seeds: Sequence[int], reports: list[str], training, retries: int = 5,
                  labels=None, **decode: Any) -> list[dict]:
    """Draw again each sampled report that nearly copies a training report (edit similarity ≥ 0.95, the ``copy_share``
    guard of :mod:`cxr_irgen.eval.report_guards`): redraw k = 1..``retries`` samples from seed ``s + k·REDRAW_STRIDE``
    with nucleus mass :func:`redraw_top_p`, until the report copies none; the last draw is kept when every draw copies.
    ``reports`` (one per image (B, 1, H, W)) is updated in place; returns per report the ``seed`` and ``top_p`` it was
    drawn with (what its decoding record names, so each stays reproducible alone). ``training``: the training reports,
    or a :class:`~cxr_irgen.eval.report_guards.TrainingReportIndex` of them; ``labels`` (B, 14) as in :func:`write_reports`.
    """
    from cxr_irgen.eval.report_guards import TrainingReportIndex

    if not decode.get("do_sample"):
        raise UserError("avoiding copies of training reports redraws sampled reports: it needs do_sample=True")
    index = training if isinstance(training, TrainingReportIndex) else TrainingReportIndex(training)
    top_p = decode.get("top_p")
    top_p = float(generator.decoding_settings(**decode).get("top_p", 1.0) if top_p is None else top_p)
    drawn = [{"seed": int(seed), "top_p": top_p} for seed in seeds]
    for i, seed in enumerate(seeds):
        for k in range(1, retries + 1):
            if index.nearest_copy(reports[i]) is None:
                break
            drawn[i] = {"seed": int(seed) + k * REDRAW_STRIDE, "top_p": redraw_top_p(top_p, k, retries)}
            options = {**decode, "top_p": drawn[i]["top_p"]}
            reports[i] = write_reports(generator, images[i : i + 1], [drawn[i]["seed"]], labels=None if labels is None else labels[i : i + 1], **options)[0]
    return drawn


def decoding_record(generator, seed: int, **decode: Any) -> dict:
    """The full decoding config :func:`write_reports` uses with ``decode`` (generate records it per pair), with the seed
    a sampled report was drawn from."""
    return {**generator.decoding_settings(**decode), **({"seed": int(seed)} if decode.get("do_sample") else {})}


@dataclass
class PairPipelineOutput:
    """N generated pairs, in request order (each label vector repeated ``n`` times).

    ``images``: N grayscale 8-bit ``PIL.Image`` (what ``generate`` writes); ``image_tensor``: (N, 1, H, W) float32 in
    [0, 1]; ``reports``: N strings (None without a language run); ``report_labels``: (N, 14) the rule labeler's
    CheXpert labels of the reports (None without reports); ``labels``: (N, 14) the requested vectors (1, 0, -1, NaN);
    ``prompts``: N prompts; ``seeds``: N ints; ``reference_ids``: N dicom ids of the reference images (None where the
    model takes no reference); ``records``: N dicts, the JSON sidecar ``generate`` writes for each image.
    """

    images: list
    image_tensor: torch.Tensor
    reports: list[str] | None
    report_labels: np.ndarray | None
    labels: np.ndarray
    prompts: list[str]
    seeds: list[int]
    reference_ids: list[str | None]
    records: list[dict] = field(repr=False)


class PairPipeline:
    """Label vectors (K, 14) → K·n (image (1, H, W), report) pairs: a trained vision model, an optional report generator,
    the reference lookup.

    Build it with :meth:`from_run_dirs`; call it with label vectors (see :meth:`__call__`). Attributes: ``vision``
    (:class:`~cxr_irgen.vision.pipeline.VisionPipeline`), ``report_generator`` (a
    :class:`~cxr_irgen.report_models.interface.ReportGenerator` or None), ``reference_pool`` (dict or None, see
    :func:`reference_pool`), ``image_size`` (side of the images, px).
    """

    def __init__(self, vision, report_generator=None, reference_pool: dict | None = None):
        if reference_pool is None and vision.encoders.image_encoder is not None:
            raise UserError("this vision model is conditioned on a reference image: give reference_pool= (PairPipeline.from_run_dirs resolves it)")
        self.vision, self.report_generator, self.reference_pool = vision, report_generator, reference_pool
        self.reference = reference_index(reference_pool) if reference_pool is not None else None
        self.image_size = vision.image_size

    @classmethod
    def from_run_dirs(cls, vision: str | Path, language: str | Path | None = None, device: str | torch.device = "auto", reference: bool = True,
                      data: Mapping | None = None, allow_reference_mismatch: bool = False) -> "PairPipeline":
        """Load a ``cxr-irgen train-vision`` run and (optionally) a language run: a ``train-language stage=prior`` run or any
        report-generator run. Every path and pool problem raises :class:`~cxr_irgen.errors.UserError` before a model loads.

        ``reference``: False is only valid for a text-only model (see :func:`reference_pool`); ``data``: another reference pool (a ``data`` config
        mapping: ``{"name": "phantom", "root": ...}``), see :func:`reference_pool`.
        """
        language_dir = language_run_dir(language) if language is not None else None
        pool = reference_pool(vision, data, reference, allow_reference_mismatch)
        return cls.load(vision, language_dir, pool, device)

    @classmethod
    def load(cls, vision: str | Path, language: str | Path | None, pool: dict | None, device: str | torch.device = "auto") -> "PairPipeline":
        """Load the models of already checked run dirs, with an already resolved reference pool (``generate`` checks first)."""
        from cxr_irgen.report_models import load_report_generator
        from cxr_irgen.vision.pipeline import VisionPipeline

        device = resolve_device(device)
        pipe = VisionPipeline.from_run_dir(vision_model_dir(vision), device=device)
        generator = load_report_generator(language).to(device) if language is not None else None
        return cls(pipe, generator, pool)

    def __call__(self, labels, n: int = 1, seeds: int | Sequence[int] = 0, sampler: str = "pndm", steps: int = 50, guidance: float = 7.5,
                 batch_size: int | None = None, reports: bool = True, progress: bool = False, avoid_copies=None, copy_retries: int = 5,
                 **decode: Any) -> PairPipelineOutput:
        """Generate ``n`` pairs per label vector.

        ``labels``: a label string (``"Cardiomegaly=1, Edema=0"``; 1 positive, 0 negative, -1 uncertain, a bare name
        positive), a dict, a (14,) vector in CheXpert order, a (K, 14) array, or a list of these. ``seeds``: an int
        (image ``i`` gets ``seeds + i``) or one per image. ``sampler``: ``pndm``, ``ddim`` or ``dpm++``; ``guidance``: the
        classifier-free guidance scale (1 disables it). ``batch_size``: images per forward pass (None: all at once; the
        images do not depend on it, up to float rounding). ``reports=False`` skips the report generator; one that
        ``reads_labels`` (a prior trained with ``prior.labels=true``) gets each pair's requested vector. ``decode``: the report generator's
        decoding options (``num_beams``, ``max_length``, ``do_sample``, ``top_p``, ...). ``avoid_copies``: training reports
        (or a ``TrainingReportIndex``); a sampled report that nearly copies one is drawn again, up to ``copy_retries``
        times (:func:`redraw_copies`). Bad labels or seeds raise
        :class:`~cxr_irgen.errors.UserError` before anything runs.
        """
        from cxr_irgen.data.imageio import read_image
        from cxr_irgen.data.labels import labels_to_prompt
        from cxr_irgen.text.labeler import label_reports
        from cxr_irgen.vision.pipeline import to_pil

        vectors, seeds = plan(labels, n, seeds)
        vectors = list(vectors)
        if avoid_copies is not None and reports and self.report_generator is not None and not decode.get("do_sample"):
            raise UserError("avoid_copies redraws sampled reports: it needs do_sample=True")
        reference_ids, reference_images = [None] * len(vectors), None
        if self.reference is not None:
            reference_ids = [self.reference.lookup(vec, seed=seed) for vec, seed in zip(vectors, seeds)]
            reference_images = torch.stack([read_image(self.reference.image_path(i), self.image_size) for i in reference_ids])
        images = self.vision(vectors, reference_images, seeds=seeds, steps=steps, guidance=guidance, scheduler=sampler,
                             batch_size=batch_size, progress=progress)
        generator = self.report_generator if reports else None
        texts = write_reports(generator, images, seeds, batch_size, labels=vectors, **decode) if generator is not None else None
        drawn = [{"seed": seed} for seed in seeds]  # what each report was sampled with, beyond ``decode``
        if texts is not None and avoid_copies is not None:
            drawn = redraw_copies(generator, images, seeds, texts, avoid_copies, copy_retries, labels=vectors, **decode)
        report_labels = label_reports(texts) if texts is not None else None
        records = self.vision.image_meta(vectors, seeds, reference_ids, steps, guidance, sampler)
        for i, record in enumerate(records):
            if self.reference is None:
                record.pop("reference_id")  # a text-only model (or reference=False) saw no reference image
            if generator is None:
                record.update(report=None, report_labels=None, decoding=None)
            else:
                record.update(report=texts[i], report_labels=format_labels(report_labels[i]), decoding=decoding_record(generator, **{**decode, **drawn[i]}))
        return PairPipelineOutput(images=[to_pil(image) for image in images], image_tensor=images, reports=texts, report_labels=report_labels,
                                  labels=np.stack(vectors), prompts=[labels_to_prompt(v) for v in vectors], seeds=seeds,
                                  reference_ids=reference_ids, records=records)
