"""`cxr-irgen generate`: label vectors → prompt + reference image → image → report, with a gallery.

Writes ``pairs/NNNN.png`` and a per-pair ``pairs/NNNN.json`` (written atomically; a
re-run skips pairs already written), then ``pairs.jsonl``, ``provenance.json`` and ``index.html``.
Under ``accelerate launch`` the pairs are split across processes by index.

The vision run directory is the unit: the reference images come from the data the vision
run was trained on, with its selection (PA train images, its ``max_images``), unless
``data.root`` is given; a given pool that differs from the run's is refused unless
``vision.allow_reference_mismatch=true``. :func:`check` finds every user error before a
model loads.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_irgen.data.imageio import IMAGE_SUFFIXES
from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, labels_from_row, parse_labels
from cxr_irgen.errors import UserError
from cxr_irgen.gallery import write_gallery
from cxr_irgen.utils.device import resolve_device
from cxr_irgen.utils.files import write_text_atomic
from cxr_irgen.utils.rundir import run_dir, saved_config

log = logging.getLogger(__name__)
MODES = ("pairs", "images", "reports")


def label_problems(text: str, where: str = "--labels") -> list[str]:
    """Every problem of one label string (nothing named, unknown name, bad value, an observation twice), not only the first."""
    parts = [p.strip() for p in re.split(r"[,;\n]", str(text)) if p.strip()]
    if not parts:
        return [f"{where} {str(text)!r} names no observation (e.g. \"Cardiomegaly=1, Edema=0\")"]
    problems, seen = [], {}
    for part in parts:
        try:
            vec = parse_labels(part)
        except UserError as err:
            problems.append(str(err).split("; valid labels")[0])
            continue
        name = CHEXPERT_LABELS[int(np.flatnonzero(~np.isnan(vec))[0])]
        if name in seen:
            problems.append(f"{name} given twice ({seen[name]!r} and {part!r})")
        seen[name] = part
    if any(p.startswith("unknown label") for p in problems):
        problems.append(f"valid labels: {', '.join(CHEXPERT_LABELS)} (aliases: effusion, opacity, lesion, normal, ...)")
    return problems


def positive_int(value, key: str) -> int:
    """``value`` as an int >= 1, or a one-line error naming ``key``."""
    text = str(value).strip()
    if not re.fullmatch(r"\+?\d+", text) or int(text) < 1:
        raise UserError(f"{key}={text!r}: give a positive whole number (e.g. {key}=4)")
    return int(text)


def read_label_vectors(labels: str | None, labels_file: str | None) -> list[np.ndarray]:
    """Label vectors from ``--labels`` (one) or a CSV (14 CheXpert columns, or one ``labels`` string column)."""
    if bool(labels) == bool(labels_file):
        raise UserError("give exactly one of --labels \"Cardiomegaly=1, Edema=0\" or labels_file=FILE.csv")
    if labels:
        problems = label_problems(labels)
        if problems:
            raise UserError(f"--labels {str(labels)!r}: " + "; ".join(problems))
        return [parse_labels(labels)]
    path = Path(labels_file)
    if not path.is_file():
        raise UserError(f"labels_file={path}: no such file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"labels_file={path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if "labels" in table.columns:
        texts = [str(text) for text in table["labels"].fillna("")]
        problems = [f"row {i + 2}: {p}" for i, text in enumerate(texts) if text.strip() for p in label_problems(text, "labels")]
        if problems:
            raise UserError(f"labels_file={path}: " + "; ".join(problems[:10]) + (f"; ... ({len(problems)} problems)" if len(problems) > 10 else ""))
        return [parse_labels(text) for text in texts]
    if not any(name in table.columns for name in CHEXPERT_LABELS):
        raise UserError(f"labels_file={path}: needs a 'labels' column or CheXpert columns ({', '.join(CHEXPERT_LABELS)}); found {list(table.columns)}")
    return [labels_from_row(row) for row in table.to_dict("records")]


def plan_pairs(vectors: list[np.ndarray], n: int, seed: int) -> list[dict]:
    """One entry per sample: index, label vector, seed (``seed + index``, so each pair is reproducible alone)."""
    return [{"index": i, "labels": vec, "seed": seed + i} for i, vec in enumerate(v for v in vectors for _ in range(n))]


def _write_json(row: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(row, indent=1))


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def vision_model_dir(checkpoint) -> Path:
    """The ``model/`` folder of a train-vision run (or the folder itself); a one-line error for anything else."""
    from cxr_irgen.vision.backbones import BACKBONE_WEIGHTS
    from cxr_irgen.vision.model import BACKBONE_DIR, MODEL_DIR

    if not checkpoint:
        raise UserError("vision.checkpoint=RUN_DIR is required (the run directory of `cxr-irgen train-vision`)")
    path = Path(str(checkpoint))
    if not path.exists():
        raise UserError(f"vision.checkpoint={path}: no such folder")
    for folder in (path / MODEL_DIR, path):
        if (folder / BACKBONE_DIR / BACKBONE_WEIGHTS).is_file():
            return folder
    kind = _run_kind(path)
    raise UserError(f"vision.checkpoint={path} is {kind}, not a finished train-vision run (no {MODEL_DIR}/{BACKBONE_DIR}/{BACKBONE_WEIGHTS})")


def language_run_dir(checkpoint) -> Path:
    """A train-language stage=prior run dir or a report-generator run (train-report-model); a one-line error for anything else."""
    from cxr_irgen.language.prior import PRIOR_FILE
    from cxr_irgen.report_models.interface import GENERATOR_FILE, RUN_SUBDIR

    if not checkpoint:
        raise UserError("language.checkpoint=RUN_DIR is required (the run directory of `cxr-irgen train-language stage=prior` or `train-report-model`)")
    path = Path(str(checkpoint))
    if not path.exists():
        raise UserError(f"language.checkpoint={path}: no such folder")
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


def reference_pool(cfg) -> dict | None:
    """Where reference images come from: ``{"data": data cfg, "max_images": N or None, "from": ...}``; None without references.

    Text-only models (conditioning mode ``text``) take no reference. By default the pool is the
    vision run's own training data and selection; ``data.root`` names another pool, refused when it
    differs from the run's unless ``vision.allow_reference_mismatch=true``.
    """
    from omegaconf import OmegaConf

    from cxr_irgen.vision.model import MODEL_CONFIG

    model_dir = vision_model_dir(cfg.vision.checkpoint)
    if not cfg.vision.reference or str(OmegaConf.load(model_dir / MODEL_CONFIG).conditioning.mode) == "text":
        return None
    saved = saved_config(model_dir)
    trained = saved.get("data") if saved is not None else None
    given = cfg.data if (cfg.data.get("root") or cfg.data.get("csv")) else None
    if given is None:
        if trained is None:
            raise UserError(f"vision.checkpoint={cfg.vision.checkpoint} records no training data (no config.yaml): set data=... data.root=... for the reference images")
        if str(cfg.data.name) not in (str(trained.name), "phantom"):
            raise UserError(f"data={cfg.data.name} without data.root, but the vision run was trained on data={trained.name}: drop data= or give data.root")
        pool = {"data": trained, "max_images": saved.get("max_images"), "from": "the vision run's training data"}
    else:
        same = trained is not None and _same_pool(given, trained)
        pool = {"data": given, "max_images": saved.get("max_images") if same else None,
                "from": "data.* given to generate" + (" (= the vision run's training data)" if same else "")}
        if trained is not None and not same and not cfg.vision.get("allow_reference_mismatch"):
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


def check(cfg) -> None:
    """Every user error of a generate call, before a model loads or a run folder is made."""
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode!r}: use {', '.join(MODES)}")
    positive_int(cfg.n, "n")
    positive_int(cfg.batch_size, "batch_size")
    if cfg.mode == "reports":
        _image_items(cfg.images_dir)
    else:
        read_label_vectors(cfg.labels, cfg.labels_file)
        reference_pool(cfg)
    if cfg.mode != "images":
        language_run_dir(cfg.language.checkpoint)


def _load_vision(cfg, device):
    from cxr_irgen.vision.pipeline import VisionPipeline

    return VisionPipeline.from_run_dir(vision_model_dir(cfg.vision.checkpoint), device=device)


def _load_language(cfg, device):
    from cxr_irgen.report_models.factory import load_report_generator

    return load_report_generator(language_run_dir(cfg.language.checkpoint)).to(device)


def _decode_options(cfg) -> dict:
    """``language.*`` decoding options; ``no_repeat_ngram_size`` only when set (not every report-model kind takes it)."""
    lang = cfg.language
    options = {"num_beams": lang.num_beams, "do_sample": lang.do_sample, "top_p": lang.top_p, "max_length": lang.max_length}
    if lang.get("no_repeat_ngram_size") is not None:
        options["no_repeat_ngram_size"] = int(lang.no_repeat_ngram_size)
    return options


def _reports(generator, images: torch.Tensor, cfg, seeds: list[int]) -> list[str]:
    """One report per image (B, 1, H, W); nucleus sampling (``language.do_sample``) draws each report from its own seed,
    one image at a time, so a sampled report is reproducible alone, whatever the batch."""
    if not cfg.language.do_sample:
        return generator(images, batch_size=cfg.batch_size, **_decode_options(cfg))
    reports = []
    for image, seed in zip(images, seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            reports += generator(image[None], batch_size=1, **_decode_options(cfg))
    return reports


def _decoding(generator, cfg, seed: int) -> dict | None:
    """The full report decoding config of :func:`_reports` (recorded in each sidecar), with the seed a sampled report was
    drawn from; None without reports."""
    if generator is None:
        return None
    return {**generator.decoding_settings(**_decode_options(cfg)), **({"seed": int(seed)} if cfg.language.do_sample else {})}


def _generate_pairs(cfg, items: list[dict], pairs_dir: Path, show_progress: bool) -> None:
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.text.labeler import label_reports
    from cxr_irgen.utils.progress import progress_bar
    from cxr_irgen.vision.pipeline import save_images

    device = resolve_device(cfg.device)
    pool = reference_pool(cfg)
    pipe = _load_vision(cfg, device)
    generator = _load_language(cfg, device) if cfg.mode == "pairs" else None
    reference = reference_index(pool) if pool is not None else None
    bar = progress_bar(total=len(items), desc="generate", disable=not show_progress, dynamic_ncols=True)
    for batch in _batches(items, int(cfg.batch_size)):
        labels = [item["labels"] for item in batch]
        ref_ids, ref_images = None, None
        if reference is not None:
            ref_ids = [reference.lookup(item["labels"], seed=item["seed"]) for item in batch]
            ref_images = torch.stack([read_image(reference.image_path(i), pipe.image_size) for i in ref_ids])
        images = pipe(labels, ref_images, seeds=[item["seed"] for item in batch], steps=cfg.vision.steps,
                      guidance=cfg.vision.guidance, scheduler=cfg.vision.scheduler)
        reports = _reports(generator, images, cfg, [item["seed"] for item in batch]) if generator is not None else [None] * len(batch)
        report_labels = label_reports(reports) if generator is not None else [None] * len(batch)
        meta = pipe.image_meta(labels, [item["seed"] for item in batch], ref_ids, cfg.vision.steps, cfg.vision.guidance, cfg.vision.scheduler)
        for info, item, report, rep_labels in zip(meta, batch, reports, report_labels):
            if ref_ids is None:
                info.pop("reference_id", None)  # a text-only model (or vision.reference=false) saw no reference image
            info.update(name=f"{item['index']:04d}", index=item["index"], checkpoint=str(cfg.vision.checkpoint), report=report,
                        report_labels=None if rep_labels is None else format_labels(rep_labels), decoding=_decoding(generator, cfg, item["seed"]))
        save_images(images, meta, pairs_dir)
        bar.update(len(batch))
    bar.close()


def readable_images(batch: list[dict], size: int, skip_bad: bool, pairs_dir: Path) -> tuple[list[dict], list[torch.Tensor]]:
    """Decode a batch of given images; a bad file is recorded as skipped (``skip_bad``) or stops the run naming it."""
    from cxr_irgen.data.imageio import BadImageError, read_image

    kept, images = [], []
    for item in batch:
        try:
            images.append(read_image(item["path"], size))
            kept.append(item)
        except BadImageError as err:
            if not skip_bad:
                raise UserError(f"{err}; set data.skip_bad=true to skip (and count) bad images") from None
            log.warning("skipped bad image %s: %s", item["path"], err)
            _write_json({"index": item["index"], "image": str(item["path"]), "skipped": str(err)}, pairs_dir / f"{item['index']:04d}.json")
    return kept, images


def _report_images(cfg, items: list[dict], pairs_dir: Path, show_progress: bool) -> None:
    from cxr_irgen.gallery import write_thumbnail
    from cxr_irgen.text.labeler import label_reports
    from cxr_irgen.utils.progress import progress_bar

    generator = _load_language(cfg, resolve_device(cfg.device))
    for batch in progress_bar(list(_batches(items, int(cfg.batch_size))), desc="reports", disable=not show_progress):
        batch, images = readable_images(batch, generator.image_size, bool(cfg.data.get("skip_bad")), pairs_dir)
        if not batch:
            continue
        reports = _reports(generator, torch.stack(images), cfg, [item["seed"] for item in batch])
        for item, report, rep_labels in zip(batch, reports, label_reports(reports)):
            thumb = write_thumbnail(item["path"], pairs_dir.parent / "thumbs" / f"{item['index']:04d}.png")
            _write_json({"index": item["index"], "image": str(item["path"]), "thumbnail": thumb.relative_to(pairs_dir.parent).as_posix(),
                         "labels": None, "report": report, "report_labels": format_labels(rep_labels),
                         "decoding": _decoding(generator, cfg, item["seed"])}, pairs_dir / f"{item['index']:04d}.json")


def _image_items(images_dir: str | None, seed: int = 0) -> list[dict]:
    """One entry per image file under ``images_dir``: index, path, seed (``seed + index``, as :func:`plan_pairs`)."""
    if not images_dir or not Path(str(images_dir)).is_dir():
        raise UserError(f"mode=reports needs images_dir=FOLDER with images; got {images_dir!r}")
    paths = sorted(p for p in Path(str(images_dir)).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"images_dir={images_dir}: no .png/.jpg/.dcm images found")
    return [{"index": i, "path": p.resolve(), "seed": seed + i} for i, p in enumerate(paths)]


def collect_pairs(out: Path) -> tuple[list[dict], list[dict]]:
    """The per-pair JSON records under ``out/pairs`` in index order, ``image`` relative to ``out``: (pairs, skipped images)."""
    rows = [json.loads(p.read_text()) for p in sorted((out / "pairs").glob("[0-9]*.json"))]
    for row in rows:
        if row.get("image") and "/" not in row["image"]:
            row["image"] = f"pairs/{row['image']}"
    return [r for r in rows if "skipped" not in r], [r for r in rows if "skipped" in r]


def _run_summary(path, what: str) -> dict | None:
    """What a later reader needs to know about a run this one used: its dir, data (evaluate reads it from here), steps."""
    from omegaconf import OmegaConf

    if not path:
        return None
    saved = saved_config(path) or {}
    data = saved.get("data") or {}
    trainer = saved.get("trainer") or {}
    return {"run": str(Path(str(path)).resolve()), "what": what, "data": data.get("name"), "data_root": data.get("root"),
            "steps": trainer.get("max_steps"), "stage": saved.get("stage"), "data_config": OmegaConf.to_container(data) if data else None}


def provenance(cfg, pool: dict | None, rows: list[dict], skipped: list[dict]) -> dict:
    """The gallery header and ``provenance.json``: the runs, their data, the sampler settings, skipped files."""
    lang = _run_summary(cfg.language.checkpoint, "train-language stage=prior") if cfg.mode != "images" else None
    info = {"mode": str(cfg.mode), "language": lang, "skipped_images": [{"image": r["image"], "reason": r["skipped"]} for r in skipped]}
    if cfg.mode != "reports":
        info["vision"] = _run_summary(cfg.vision.checkpoint, "train-vision")
        info["sampler"] = {"scheduler": str(cfg.vision.scheduler), "steps": int(cfg.vision.steps), "guidance": float(cfg.vision.guidance), "seed": int(cfg.seed)}
        info["reference_pool"] = None if pool is None else {
            "data": str(pool["data"].name), "root": str(pool["data"].get("root")), "selection": "vision_train: PA images of the train split",
            "max_images": pool["max_images"], "from": pool["from"]}
    if cfg.mode == "reports" and lang and lang["data"] == "phantom":
        root = Path(str(lang["data_root"])).resolve() if lang["data_root"] else None
        if root is None or not all(Path(r["image"]).resolve().is_relative_to(root) for r in rows):
            info["warning"] = (f"the report model was trained on procedural phantoms ({lang['data_root']}); these images are not phantoms of that "
                               "tree, so its reports describe phantom patterns, not these radiographs")
    return info


def run(cfg) -> None:
    from accelerate import PartialState

    check(cfg)
    state = PartialState(cpu=resolve_device(cfg.device).type == "cpu")  # without cpu=True, CPU processes under torchrun would not shard
    out = run_dir(cfg)
    pairs_dir = out / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "reports":
        items = _image_items(cfg.images_dir, int(cfg.seed))
    else:
        items = plan_pairs(read_label_vectors(cfg.labels, cfg.labels_file), int(cfg.n), int(cfg.seed))
    mine = [it for it in items[state.process_index :: state.num_processes] if not (pairs_dir / f"{it['index']:04d}.json").exists()]
    log.info("%d pairs planned, %d left for process %d", len(items), len(mine), state.process_index)
    if mine:
        work = _report_images if cfg.mode == "reports" else _generate_pairs
        work(cfg, mine, pairs_dir, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        rows, skipped = collect_pairs(out)
        info = provenance(cfg, reference_pool(cfg) if cfg.mode != "reports" else None, rows, skipped)
        _write_json(info, out / "provenance.json")
        with open(out / "pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
        gallery = write_gallery(rows, out / "index.html", info)
        if skipped:
            print(f"skipped {len(skipped)} bad image(s) (data.skip_bad=true): " + ", ".join(r["image"] for r in skipped))
        print(f"{len(rows)} pairs in {out / 'pairs.jsonl'}; gallery: {gallery}")
