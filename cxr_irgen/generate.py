"""`cxr-irgen generate`: label vectors → prompt + reference image → image → report, with a gallery.

A thin wrapper over :class:`cxr_irgen.pipeline.PairPipeline` (which owns the models and the reference
lookup) for ``mode=pairs`` and ``mode=images``. Writes ``pairs/NNNN.png`` and a per-pair ``pairs/NNNN.json`` (written atomically; a
re-run skips pairs already written), then ``pairs.jsonl``, ``provenance.json`` and ``index.html``.
Under ``accelerate launch`` the pairs are split across processes by index.

The vision run directory is the unit: the reference images come from the data the vision
run was trained on, with its selection (PA train images, its ``max_images``), unless
``data.root`` is given; a given pool that differs from the run's is refused unless
``vision.allow_reference_mismatch=true``. :func:`check` finds every user error before a
model loads and resolves the reference pool, once per run.
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
from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, label_problems, labels_from_row, parse_labels
from cxr_irgen.errors import UserError
from cxr_irgen.gallery import write_gallery
from cxr_irgen.pipeline import decoding_record, language_run_dir, redraw_copies, write_reports
from cxr_irgen.pipeline import reference_pool as resolve_reference_pool
from cxr_irgen.utils.device import resolve_device
from cxr_irgen.utils.files import write_text_atomic
from cxr_irgen.utils.rundir import run_dir, saved_config

log = logging.getLogger(__name__)
MODES = ("pairs", "images", "reports")


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


def reference_pool(cfg) -> dict | None:
    """The reference pool of a generate config (:func:`cxr_irgen.pipeline.reference_pool`): ``data.*`` counts only when it
    names a root or csv or another data kind than the default ``phantom``."""
    data = cfg.data if (cfg.data.get("root") or cfg.data.get("csv") or str(cfg.data.name) != "phantom") else None
    return resolve_reference_pool(cfg.vision.checkpoint, data, bool(cfg.vision.reference), bool(cfg.vision.get("allow_reference_mismatch")))


def check(cfg) -> dict | None:
    """Every user error of a generate call, before a model loads or a run folder is made; returns the reference pool
    (None in ``mode=reports`` or without references), so a run resolves it once."""
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode!r}: use {', '.join(MODES)}")
    positive_int(cfg.n, "n")
    positive_int(cfg.batch_size, "batch_size")
    pool = None
    if cfg.mode == "reports":
        _image_items(cfg.images_dir)
    else:
        read_label_vectors(cfg.labels, cfg.labels_file)
        pool = reference_pool(cfg)
    if cfg.mode != "images":
        if cfg.language.avoid_copies and not cfg.language.do_sample:
            raise UserError("language.avoid_copies=true redraws sampled reports: set language.do_sample=true")
        language_run_dir(cfg.language.checkpoint)
    return pool


def _decode_options(cfg) -> dict:
    """``language.*`` decoding options; ``no_repeat_ngram_size`` only when set (not every report-model kind takes it)."""
    lang = cfg.language
    options = {"num_beams": lang.num_beams, "do_sample": lang.do_sample, "top_p": lang.top_p, "max_length": lang.max_length}
    if lang.get("no_repeat_ngram_size") is not None:
        options["no_repeat_ngram_size"] = int(lang.no_repeat_ngram_size)
    return options


def training_report_index(language_dir: Path):
    """The near-copy index (:class:`~cxr_irgen.eval.report_guards.TrainingReportIndex`) of the reports of the training split
    of the data the language run was trained on (its ``config.yaml``): each findings, impression and both."""
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.eval.report_guards import TrainingReportIndex, guard_texts

    saved = saved_config(language_dir)
    if saved is None or saved.get("data") is None:
        raise UserError(f"language.avoid_copies: {language_dir} records no training data (config.yaml with data.*)")
    table = load_table(saved.data)
    train = table[table["split"] == "train"]
    return TrainingReportIndex(guard_texts(load_sections(train, saved.data)))


def _reports(generator, images: torch.Tensor, cfg, seeds: list[int], copies=None) -> tuple[list[str], list[dict]]:
    """One report per image (B, 1, H, W) with the ``language.*`` options (:func:`cxr_irgen.pipeline.write_reports`), near
    copies of ``copies`` (a training-report index) drawn again; returns the reports and, per report, what it was sampled
    with beyond those options (``seed``, and ``top_p`` for a redrawn one)."""
    reports = write_reports(generator, images, seeds, int(cfg.batch_size), **_decode_options(cfg))
    if copies is None:
        return reports, [{"seed": seed} for seed in seeds]
    return reports, redraw_copies(generator, images, seeds, reports, copies, int(cfg.language.copy_retries), **_decode_options(cfg))


def _sidecar(record: dict, item: dict, checkpoint) -> dict:
    """The pipeline's record of one pair with generate's keys (name, index, checkpoint) before its report's."""
    report = {key: record.pop(key) for key in ("report", "report_labels", "decoding")}
    return {**record, "name": f"{item['index']:04d}", "index": item["index"], "checkpoint": str(checkpoint), **report}


def _generate_pairs(cfg, pool: dict | None, items: list[dict], pairs_dir: Path, show_progress: bool) -> None:
    from cxr_irgen.pipeline import PairPipeline
    from cxr_irgen.utils.progress import progress_bar
    from cxr_irgen.vision.pipeline import save_images

    language = language_run_dir(cfg.language.checkpoint) if cfg.mode == "pairs" else None
    pipe = PairPipeline.load(cfg.vision.checkpoint, language, pool, cfg.device)
    copies = training_report_index(language) if language is not None and cfg.language.avoid_copies else None
    bar = progress_bar(total=len(items), desc="generate", disable=not show_progress, dynamic_ncols=True)
    for batch in _batches(items, int(cfg.batch_size)):
        out = pipe([item["labels"] for item in batch], seeds=[item["seed"] for item in batch], sampler=cfg.vision.scheduler, steps=cfg.vision.steps,
                   guidance=cfg.vision.guidance, batch_size=int(cfg.batch_size), avoid_copies=copies, copy_retries=int(cfg.language.copy_retries),
                   **_decode_options(cfg))
        save_images(out.image_tensor, [_sidecar(record, item, cfg.vision.checkpoint) for record, item in zip(out.records, batch)], pairs_dir)
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
    from cxr_irgen.report_models import load_report_generator
    from cxr_irgen.text.labeler import label_reports
    from cxr_irgen.utils.progress import progress_bar

    language = language_run_dir(cfg.language.checkpoint)
    generator = load_report_generator(language).to(resolve_device(cfg.device))
    copies = training_report_index(language) if cfg.language.avoid_copies else None
    for batch in progress_bar(list(_batches(items, int(cfg.batch_size))), desc="reports", disable=not show_progress):
        batch, images = readable_images(batch, generator.image_size, bool(cfg.data.get("skip_bad")), pairs_dir)
        if not batch:
            continue
        reports, drawn = _reports(generator, torch.stack(images), cfg, [item["seed"] for item in batch], copies)
        for item, sampled, report, rep_labels in zip(batch, drawn, reports, label_reports(reports)):
            thumb = write_thumbnail(item["path"], pairs_dir.parent / "thumbs" / f"{item['index']:04d}.png")
            _write_json({"index": item["index"], "image": str(item["path"]), "thumbnail": thumb.relative_to(pairs_dir.parent).as_posix(),
                         "labels": None, "report": report, "report_labels": format_labels(rep_labels),
                         "decoding": decoding_record(generator, **{**_decode_options(cfg), **sampled})}, pairs_dir / f"{item['index']:04d}.json")


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

    pool = check(cfg)
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
        if cfg.mode == "reports":
            _report_images(cfg, mine, pairs_dir, state.is_main_process)
        else:
            _generate_pairs(cfg, pool, mine, pairs_dir, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        rows, skipped = collect_pairs(out)
        info = provenance(cfg, pool, rows, skipped)
        _write_json(info, out / "provenance.json")
        with open(out / "pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
        gallery = write_gallery(rows, out / "index.html", info)
        if skipped:
            print(f"skipped {len(skipped)} bad image(s) (data.skip_bad=true): " + ", ".join(r["image"] for r in skipped))
        print(f"{len(rows)} pairs in {out / 'pairs.jsonl'}; gallery: {gallery}")
