"""`cxr-irgen demo`: phantoms → train-vision → train-language (autoencoder, prior) → train-classifier
→ generate pairs → evaluate them → reports for real held-out test images → evaluate those reports
against the images' own reports, all under one run directory, on CPU in minutes.

Each step composes its own command config (the same files the CLI uses) with the
demo's overrides and writes to ``<run>/<NN-step>``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
from hydra import compose

from cxr_irgen.data.labels import CHEXPERT_LABELS, label_key
from cxr_irgen.utils.rundir import run_dir, start_run

log = logging.getLogger(__name__)


def _step(config: str, out: Path, overrides: list[str], task) -> Path:
    """Compose ``configs/<config>.yaml`` with ``overrides``, run ``task(cfg)`` into ``out``; returns ``out``."""
    cfg = compose(config, overrides=[*overrides, f"run_dir={out}"])
    start_run(cfg)
    started = time.perf_counter()
    print(f"\n=== {out.name}: {config} {' '.join(overrides)}", flush=True)
    task(cfg)
    print(f"=== {out.name} done in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def test_label_sets(root: Path, limit: int) -> pd.DataFrame:
    """The distinct label vectors of the phantom test split, most frequent first (CheXpert columns)."""
    chexpert = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    test = chexpert[chexpert.study_id.isin(split.loc[split.split == "test", "study_id"])]
    keys = test[list(CHEXPERT_LABELS)].apply(lambda row: label_key(row.to_numpy(dtype="float32")), axis=1)
    first = test.assign(key=keys).groupby("key").head(1).set_index("key")
    order = keys.value_counts().index[:limit]
    return first.loc[order, list(CHEXPERT_LABELS)].reset_index(drop=True)


def link_test_images(root: Path, out: Path, limit: int) -> Path:
    """Symlink up to ``limit`` frontal test images (one per study with a report) into ``out``; returns ``out``."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.selections import language_stage2

    out.mkdir(parents=True, exist_ok=True)
    for path in language_stage2(load_index(root), "test")["image_path"].head(limit):
        link = out / Path(path).name
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    return out


def run(cfg) -> None:
    from cxr_irgen import generate
    from cxr_irgen.data import phantoms
    from cxr_irgen.eval import classifier, evaluate
    from cxr_irgen.language import train as language_train
    from cxr_irgen.vision import train as vision_train

    out = run_dir(cfg)
    started = time.perf_counter()
    data = out / "phantoms"
    p = cfg.phantoms
    _step("make_phantoms", out / "01-phantoms", [f"out={data}", f"n={p.n}", f"size={p.size}", f"seed={p.seed}"], phantoms.run)
    on_data = [f"data.root={data}"]
    vision_dir = _step("train_vision", out / "02-vision", [*on_data, *cfg.vision.overrides], vision_train.run)
    ae_dir = _step("train_language", out / "03-language-autoencoder", [*on_data, *cfg.language.autoencoder_overrides], language_train.run)
    prior_dir = _step("train_language", out / "04-language-prior",
                      [*on_data, f"autoencoder={ae_dir}", *cfg.language.prior_overrides], language_train.run)
    clf_dir = _step("train_classifier", out / "05-classifier", [*on_data, *cfg.classifier.overrides], classifier.run)
    labels_csv = out / "test_labels.csv"
    test_label_sets(data, cfg.generate.max_label_sets).to_csv(labels_csv, index=False)
    gen_dir = _step("generate", out / "06-generate",
                    [*on_data, f"labels_file={labels_csv}", f"n={cfg.generate.n}", f"vision.checkpoint={vision_dir}",
                     f"language.checkpoint={prior_dir}", *cfg.generate.overrides], generate.run)
    on_classifier = [f"eval.auroc.classifier={clf_dir}", f"eval.fid.classifier={clf_dir}"]
    eval_dir = _step("evaluate", out / "07-evaluate",
                     [*on_data, f"generated={gen_dir}", *on_classifier, *cfg.evaluate.overrides], evaluate.run)
    test_images = link_test_images(data, out / "test_images", cfg.reports.max_images)
    reports_dir = _step("generate", out / "08-reports",
                        [*on_data, "mode=reports", f"images_dir={test_images}", f"language.checkpoint={prior_dir}"], generate.run)
    reports_eval_dir = _step("evaluate", out / "09-evaluate-reports",
                             [*on_data, f"generated={reports_dir}", *cfg.reports.evaluate_overrides], evaluate.run)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"tables (printed above by each evaluate step): {eval_dir / 'tables.md'} and {reports_eval_dir / 'tables.md'}")
    print(f"gallery: {gen_dir / 'index.html'}")
    print(f"metrics: {eval_dir / 'metrics.json'} and {reports_eval_dir / 'metrics.json'}")
