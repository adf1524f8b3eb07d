"""Downstream utility of synthetic image/report pairs: does a report generator trained on them write good reports
for real images?

The same encoder × decoder (:mod:`cxr_irgen.report_models`, ``eval.report_utility.encoder`` /
``decoder``), steps and seed are trained with the shared trainer on each training set of pairs
(:func:`cxr_irgen.eval.utility.training_sets`):

- ``real``: the real frontal training images of ``data`` with their own ``text`` section;
- ``synthetic``: the generated images with the reports generated with them;
- ``real+synthetic@r``: the real pairs plus ``r × N_real`` generated pairs, for each ratio r.

Controls, so that a number can be read: ``control: most frequent report`` writes the real
training set's most frequent text for every test image (no training), and, with
``shuffled_control``, ``control: synthetic, shuffled pairing`` trains on the synthetic images
with their reports permuted (what is left when the pairing carries nothing).

Each model writes a report for every real test image (the ``test_split`` images in ``views``
with the ``text`` section; at most ``max_test``), scored against that image's own text:
BLEU-1..4, ROUGE-L, CIDEr-D (:func:`~cxr_irgen.text.text_metrics.text_metrics`) and CheXpert F1
with 95% bootstrap CIs (:func:`~cxr_irgen.text.chexpert_f1.chexpert_f1_reports`, both sides
labelled by the same labeler). :func:`cxr_irgen.eval.tables.report_utility_table` writes the table.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

MOST_FREQUENT, SHUFFLED = "control: most frequent report", "control: synthetic, shuffled pairing"


def pairs_dataset(pairs: pd.DataFrame, image_size: int):
    """An :class:`~cxr_irgen.data.datasets.ImageReportDataset` of a table with ``image_path`` and ``text`` (one row per pair)."""
    from cxr_irgen.data.datasets import ImageReportDataset

    index = pd.DataFrame({"dicom_id": [f"pair-{i}" for i in range(len(pairs))], "study_id": range(len(pairs)), "image_path": pairs["image_path"].tolist()})
    sections = pd.DataFrame({"study_id": range(len(pairs)), "findings": pairs["text"].tolist(), "impression": None})
    return ImageReportDataset(index, sections, image_size, "findings")


def real_pairs(table: pd.DataFrame, sections: pd.DataFrame, split: str, views, text: str, image_size: int) -> pd.DataFrame:
    """``image_path`` + ``text`` of the real images of ``split`` in ``views`` whose report has ``text``."""
    from cxr_irgen.report_models.train import report_pairs

    pairs = report_pairs(table, sections, split, views, text, image_size)
    return pd.DataFrame({"image_path": pairs.image_paths, "text": pairs.texts})


def train_report_generator(pairs: pd.DataFrame, cfg, seed: int, run_dir: Path):
    """An :class:`~cxr_irgen.report_models.model.EncoderDecoderGenerator` trained on ``pairs`` (image_path, text) under ``cfg``."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.datasets import collate
    from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model
    from cxr_irgen.report_models.train import cached_tokens, config_args
    from cxr_irgen.report_models.vocabulary import Vocabulary
    from cxr_irgen.utils.training import make_accelerator, train

    voc = cfg.vocabulary
    vocab = Vocabulary.build(pairs["text"].tolist(), int(voc.min_count), int(voc.max_words), None if voc.get("max_size") is None else int(voc.max_size))
    model = build_report_model(str(cfg.encoder), str(cfg.decoder), vocab, config_args(cfg.get("encoder_args")), config_args(cfg.get("decoder_args")))
    accelerator = make_accelerator(cfg.trainer, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = pairs_dataset(pairs, model.encoder.image_size)
    if model.encoder.frozen:
        dataset = cached_tokens(model.encoder, dataset, run_dir, accelerator, int(cfg.batch_size))

    def collate_targets(items: list[dict]) -> dict:
        batch = collate(items)
        batch["targets"] = vocab.encode(batch.pop("text"))
        return batch

    train(accelerator, model, dataset, lambda m, batch: m(batch), cfg.trainer, run_dir, seed, collate_fn=collate_targets)
    return EncoderDecoderGenerator(accelerator.unwrap_model(model).cpu().eval(), vocab, OmegaConf.to_container(cfg.decoding, resolve=True))


def write_reports(generator, paths: list[str], batch_size: int) -> list[str]:
    """One report per image at ``paths``, read at the generator's side."""
    from cxr_irgen.data.imageio import read_image

    reports = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([read_image(p, generator.image_size) for p in paths[start:start + batch_size]])
        reports += generator(images, batch_size=batch_size)
    return reports


def score_reports(reports: list[str], references: list[str], labeler: dict, n_bootstrap: int, seed: int) -> dict:
    """``{"text": BLEU/ROUGE-L/CIDEr-D, "chexpert_f1": ..., "distinct_reports"}`` of ``reports`` vs ``references``."""
    from cxr_irgen.text.chexpert_f1 import chexpert_f1_reports
    from cxr_irgen.text.text_metrics import text_metrics

    text = {k: v for k, v in text_metrics(reports, references, with_meteor=False).items() if v is not None}
    return {"text": text, "chexpert_f1": chexpert_f1_reports(reports, references, labeler, n_bootstrap=n_bootstrap, seed=seed),
            "distinct_reports": len(set(reports))}


def downstream_report_utility(real_train: pd.DataFrame, synthetic: pd.DataFrame, real_test: pd.DataFrame, cfg, labeler: dict, seed: int) -> dict:
    """Train a report generator on each training set, write reports for the real test images, score them; one row per set.

    Tables: ``image_path`` + ``text``. ``cfg``: ``eval.report_utility``; ``labeler``: :func:`~cxr_irgen.text.labeler.labeler_kwargs`.
    """
    from cxr_irgen.eval.utility import training_sets

    if synthetic.empty:
        raise UserError("eval.metrics has report_utility but no generated image comes with a generated report (pairs.jsonl of generate mode=pairs)")
    if real_train.empty or real_test.empty:
        raise UserError(f"report_utility needs real frontal images with a {cfg.text} section in both the train and the test split of data")
    if cfg.max_test and len(real_test) > int(cfg.max_test):
        real_test = real_test.iloc[np.sort(np.random.default_rng(seed).choice(len(real_test), int(cfg.max_test), replace=False))]
    paths, references = real_test["image_path"].tolist(), real_test["text"].tolist()
    n_boot = int(cfg.n_bootstrap)
    most_frequent = Counter(real_train["text"]).most_common(1)[0][0]
    rows = [{"training_set": MOST_FREQUENT, "n_real": len(real_train), "n_synthetic": 0,
             **score_reports([most_frequent] * len(paths), references, labeler, n_boot, seed)}]
    sets = training_sets(real_train, synthetic, list(cfg.ratios), bool(cfg.synthetic_only), seed)
    if cfg.shuffled_control:
        sets[SHUFFLED] = synthetic.assign(text=synthetic["text"].to_numpy()[np.random.default_rng(seed).permutation(len(synthetic))])
    with tempfile.TemporaryDirectory(prefix="cxr-irgen-report-utility-") as scratch:
        for number, (name, pairs) in enumerate(sets.items()):
            n_real = min(len(pairs), len(real_train)) if name.startswith("real") else 0
            log.info("report utility: training on %s (%d pairs)", name, len(pairs))
            generator = train_report_generator(pairs, cfg, seed, Path(scratch) / f"set-{number}")
            rows.append({"training_set": name, "n_real": n_real, "n_synthetic": len(pairs) - n_real,
                         **score_reports(write_reports(generator, paths, int(cfg.batch_size)), references, labeler, n_boot, seed)})
    return {"rows": rows, "n_test": len(paths), "text": str(cfg.text), "generator": f"{cfg.encoder} × {cfg.decoder}",
            "steps": int(cfg.trainer.max_steps), "n_bootstrap": n_boot, "seed": seed,
            "test": f"real {cfg.test_split} split, {'/'.join(map(str, cfg.views))} images with a {cfg.text} section"}
