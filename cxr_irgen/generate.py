"""`cxr-irgen generate`: label vectors → prompt + reference image → image → report, with a gallery.

Writes ``pairs/NNNN.png`` and a per-pair ``pairs/NNNN.json`` (written atomically; a
re-run skips pairs already written), then ``pairs.jsonl`` and ``index.html``.
Under ``accelerate launch`` the pairs are split across processes by index.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, labels_from_row, parse_labels
from cxr_irgen.errors import UserError
from cxr_irgen.gallery import write_gallery
from cxr_irgen.utils.rundir import run_dir

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def read_label_vectors(labels: str | None, labels_file: str | None) -> list[np.ndarray]:
    """Label vectors from ``--labels`` (one) or a CSV (14 CheXpert columns, or one ``labels`` string column)."""
    if bool(labels) == bool(labels_file):
        raise UserError("give exactly one of --labels \"Cardiomegaly=1, Edema=0\" or labels_file=FILE.csv")
    if labels:
        return [parse_labels(labels)]
    path = Path(labels_file)
    if not path.is_file():
        raise UserError(f"labels_file={path}: no such file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"labels_file={path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if "labels" in table.columns:
        return [parse_labels(str(text)) for text in table["labels"].fillna("")]
    if not any(name in table.columns for name in CHEXPERT_LABELS):
        raise UserError(f"labels_file={path}: needs a 'labels' column or CheXpert columns ({', '.join(CHEXPERT_LABELS)}); found {list(table.columns)}")
    return [labels_from_row(row) for row in table.to_dict("records")]


def plan_pairs(vectors: list[np.ndarray], n: int, seed: int) -> list[dict]:
    """One entry per sample: index, label vector, seed (``seed + index``, so each pair is reproducible alone)."""
    return [{"index": i, "labels": vec, "seed": seed + i} for i, vec in enumerate(v for v in vectors for _ in range(n))]


def _write_json(row: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, path)


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _device(cfg) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _load_vision(cfg, device):
    from cxr_irgen.vision.pipeline import VisionPipeline

    if not cfg.vision.checkpoint:
        raise UserError("vision.checkpoint=RUN_DIR is required (the run directory of `cxr-irgen train-vision`)")
    return VisionPipeline.from_run_dir(cfg.vision.checkpoint, device=device)


def _load_language(cfg, device):
    from cxr_irgen.report_models.interface import load_report_generator

    if not cfg.language.checkpoint:
        raise UserError("language.checkpoint=RUN_DIR is required (the run directory of `cxr-irgen train-language stage=prior` or of a report-model training)")
    return load_report_generator(cfg.language.checkpoint).to(device)


def _reports(generator, images: torch.Tensor, cfg) -> list[str]:
    lang = cfg.language
    return generator(images, batch_size=cfg.batch_size, num_beams=lang.num_beams, do_sample=lang.do_sample, top_p=lang.top_p, max_length=lang.max_length)


def _generate_pairs(cfg, items: list[dict], pairs_dir: Path, show_progress: bool) -> None:
    from tqdm.auto import tqdm

    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.data.reference import ReferenceIndex
    from cxr_irgen.data.selections import vision_train
    from cxr_irgen.eval.labeler import label_reports
    from cxr_irgen.vision.pipeline import save_images

    device = _device(cfg)
    pipe = _load_vision(cfg, device)
    generator = _load_language(cfg, device) if cfg.mode == "pairs" else None
    # references come from the images the backbone was trained on (DESIGN 1.1: PA train split)
    reference = ReferenceIndex.from_index(vision_train(load_table(cfg.data))) if cfg.vision.reference else None
    bar = tqdm(total=len(items), desc="generate", disable=not show_progress, dynamic_ncols=True)
    for batch in _batches(items, cfg.batch_size):
        labels = [item["labels"] for item in batch]
        ref_ids, ref_images = [None] * len(batch), None
        if reference is not None:
            ref_ids = [reference.lookup(item["labels"], seed=item["seed"]) for item in batch]
            ref_images = torch.stack([read_image(reference.image_path(i), pipe.image_size) for i in ref_ids])
        images = pipe(labels, ref_images, seeds=[item["seed"] for item in batch], steps=cfg.vision.steps,
                      guidance=cfg.vision.guidance, scheduler=cfg.vision.scheduler)
        reports = _reports(generator, images, cfg) if generator is not None else [None] * len(batch)
        report_labels = label_reports(reports) if generator is not None else [None] * len(batch)
        meta = pipe.image_meta(labels, [item["seed"] for item in batch], ref_ids, cfg.vision.steps, cfg.vision.guidance, cfg.vision.scheduler)
        for info, item, report, rep_labels in zip(meta, batch, reports, report_labels):
            info.update(name=f"{item['index']:04d}", index=item["index"], checkpoint=str(cfg.vision.checkpoint), report=report,
                        report_labels=None if rep_labels is None else format_labels(rep_labels))
        save_images(images, meta, pairs_dir)
        bar.update(len(batch))
    bar.close()


def _report_images(cfg, items: list[dict], pairs_dir: Path, show_progress: bool) -> None:
    from tqdm.auto import tqdm

    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.eval.labeler import label_reports

    generator = _load_language(cfg, _device(cfg))
    for batch in tqdm(list(_batches(items, cfg.batch_size)), desc="reports", disable=not show_progress):
        images = torch.stack([read_image(item["path"], generator.image_size) for item in batch])
        reports = _reports(generator, images, cfg)
        for item, report, rep_labels in zip(batch, reports, label_reports(reports)):
            _write_json({"index": item["index"], "image": str(item["path"]), "labels": None, "report": report,
                         "report_labels": format_labels(rep_labels)}, pairs_dir / f"{item['index']:04d}.json")


def _image_items(images_dir: str | None) -> list[dict]:
    if not images_dir or not Path(images_dir).is_dir():
        raise UserError(f"mode=reports needs images_dir=FOLDER with images; got {images_dir!r}")
    paths = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"images_dir={images_dir}: no .png/.jpg/.dcm images found")
    return [{"index": i, "path": p.resolve()} for i, p in enumerate(paths)]


def collect_pairs(out: Path) -> list[dict]:
    """All per-pair JSON records under ``out/pairs``, in index order; ``image`` made relative to ``out``."""
    rows = [json.loads(p.read_text()) for p in sorted((out / "pairs").glob("[0-9]*.json"))]
    for row in rows:
        if row.get("image") and "/" not in row["image"]:
            row["image"] = f"pairs/{row['image']}"
    return rows


def run(cfg) -> None:
    from accelerate import PartialState

    if cfg.mode not in ("pairs", "images", "reports"):
        raise UserError(f"mode={cfg.mode!r}: use pairs, images or reports")
    state = PartialState()
    out = run_dir(cfg)
    pairs_dir = out / "pairs"
    pairs_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "reports":
        items = _image_items(cfg.images_dir)
    else:
        items = plan_pairs(read_label_vectors(cfg.labels, cfg.labels_file), int(cfg.n), int(cfg.seed))
    mine = [it for it in items[state.process_index :: state.num_processes] if not (pairs_dir / f"{it['index']:04d}.json").exists()]
    log.info("%d pairs planned, %d left for process %d", len(items), len(mine), state.process_index)
    if mine:
        work = _report_images if cfg.mode == "reports" else _generate_pairs
        work(cfg, mine, pairs_dir, state.is_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        rows = collect_pairs(out)
        with open(out / "pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
        gallery = write_gallery(rows, out / "index.html")
        print(f"{len(rows)} pairs in {out / 'pairs.jsonl'}; gallery: {gallery}")
