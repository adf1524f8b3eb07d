"""`cxr-irgen train-report-model`: train any encoder × decoder on image/report pairs.

    cxr-irgen train-report-model encoder=dve decoder=transformer views=[AP] text=findings
    cxr-irgen train-report-model -m encoder=dve,fve,cve,ccve decoder=transformer,m2,cnn_rnn_rnn   # the 12-cell grid

Data: images of the ``train`` split in ``views`` (the study: ``[AP]``; CXR-IRGen: ``[PA, AP]``)
whose report has the ``text`` section (``images_per_study=3``: one item per study with up to 3 of its images, the
encoder's tokens max-merged, as ifcc's M2Trans); held-out: one image per item of the ``validate`` split. The vocabulary is
built from the training texts (``vocabulary.min_count``, ``max_words``). A frozen encoder's
tokens are computed once per image and cached (``features.safetensors``), so training
reads them instead of the images. The loop is the shared trainer (Accelerate, atomic
checkpoints, ``trainer.resume=latest``). Run dir: ``vocabulary.json``, ``report_model/``
(the :class:`~cxr_irgen.report_models.model.EncoderDecoderGenerator`; ``language.checkpoint=RUN``
of ``generate mode=reports`` loads it), ``reports.csv`` and ``metrics.json`` (held-out reports).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from cxr_irgen.data.datasets import ImageReportDataset, StudyReportDataset, collate
from cxr_irgen.errors import UserError
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.interface import RUN_SUBDIR
from cxr_irgen.report_models.model import EncoderDecoderGenerator, ReportModel, build_report_model, study_tokens
from cxr_irgen.report_models.vocabulary import VOCABULARY_FILE, Vocabulary
from cxr_irgen.utils.rundir import run_dir
from cxr_irgen.utils.training import make_accelerator, to_device, train

log = logging.getLogger(__name__)
FEATURES_FILE = "features.safetensors"
VIEWS = ("PA", "AP", "LATERAL", "LL")


def report_pairs(table: pd.DataFrame, sections: pd.DataFrame, split: str, views, text: str, image_size: int, skip_bad: bool = False,
                 images_per_study: int = 1) -> ImageReportDataset | StudyReportDataset:
    """Images of ``split`` in ``views`` whose report has ``text``: one item per image (:class:`ImageReportDataset`), or with
    ``images_per_study`` > 1 one item per study with up to that many of its images (:class:`StudyReportDataset`)."""
    views = [str(v) for v in views]
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise UserError(f"views={views}: choose among {', '.join(VIEWS)} (the study uses [AP], CXR-IRGen [PA, AP])")
    index = table[(table["split"] == split) & table["view"].isin(views)]
    if not len(index):
        raise UserError(f"no {'/'.join(views)} images in the {split} split of data.root: check data= and views=")
    if int(images_per_study) == 1:
        pairs = ImageReportDataset(index, sections, image_size, text, skip_bad)
    else:
        pairs = StudyReportDataset(index, sections, image_size, text, int(images_per_study), skip_bad)
    log.info("report pairs [%s, %s, %s]: %d items (up to %d image(s) each)", split, "+".join(views), text, len(pairs), int(images_per_study))
    return pairs


class CachedTokens(Dataset):
    """Items ``{"visual_tokens": (N, C), "text": str}`` from tokens computed once by a frozen encoder."""

    def __init__(self, tokens: torch.Tensor, texts: list[str]):
        self.tokens, self.texts = tokens, texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"visual_tokens": self.tokens[index], "text": self.texts[index]}


@torch.no_grad()
def encode_images(encoder: torch.nn.Module, pairs: Dataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """A frozen encoder's tokens of every item (a study's images max-merged), (N, num_tokens, width) float16 on the CPU."""
    from cxr_irgen.utils.progress import progress_bar

    encoder.to(device).eval()
    out = [study_tokens(encoder, batch["pixel_values"].to(device), to_device(batch.get("image_mask"), device)).half().cpu()
           for batch in progress_bar(DataLoader(pairs, batch_size=batch_size, collate_fn=collate), desc="encode", dynamic_ncols=True)]
    return torch.cat(out)


def cached_tokens(encoder, pairs: ImageReportDataset | StudyReportDataset, out: Path, accelerator, batch_size: int) -> CachedTokens:
    """The frozen encoder's tokens of ``pairs``: read from ``out/features.safetensors`` when it matches, else computed once."""
    from safetensors.torch import load_file, save_file

    path = out / FEATURES_FILE
    ids_path = path.with_suffix(".json")
    with accelerator.main_process_first():
        if not (path.is_file() and ids_path.is_file() and json.loads(ids_path.read_text()) == pairs.dicom_ids):
            if accelerator.is_main_process:
                save_file({"tokens": encode_images(encoder, pairs, batch_size, accelerator.device)}, str(path))
                ids_path.write_text(json.dumps(pairs.dicom_ids))
        tokens = load_file(str(path))["tokens"]
    encoder.to("cpu")
    return CachedTokens(tokens, pairs.texts)


def load_vocabulary(out: Path, texts: list[str], vocab_cfg) -> Vocabulary:
    """The run's vocabulary: reused when ``out/vocabulary.json`` exists (resume), else built from ``texts``."""
    if (out / VOCABULARY_FILE).is_file():
        return Vocabulary.load(out)
    max_size = vocab_cfg.get("max_size")
    return Vocabulary.build(texts, int(vocab_cfg.min_count), int(vocab_cfg.max_words), None if max_size is None else int(max_size))


def config_args(node) -> dict:
    """A config node of overrides as a plain dict without its null entries ({} when empty or absent)."""
    args = OmegaConf.to_container(node, resolve=True) if node else {}
    return {k: v for k, v in args.items() if v is not None}


def build_from_cfg(cfg: DictConfig, vocab: Vocabulary) -> ReportModel:
    """The encoder × decoder named by ``cfg.encoder`` / ``cfg.decoder`` with ``encoder_args`` / ``decoder_args`` overrides."""
    return build_report_model(str(cfg.encoder), str(cfg.decoder), vocab, config_args(cfg.get("encoder_args")), config_args(cfg.get("decoder_args")), float(cfg.projection_dropout))


def run(cfg: DictConfig) -> Path:
    """Train, save ``report_model/``, write held-out reports and metrics; returns the run dir."""
    from cxr_irgen.data.adapters import load_sections, load_table

    out = run_dir(cfg)
    image_size = int(report_model_config("encoder", str(cfg.encoder), config_args(cfg.get("encoder_args"))).image_size)
    report_model_config("decoder", str(cfg.decoder))  # names checked before any data or model loads
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    pairs = report_pairs(table, sections, "train", cfg.views, str(cfg.text), image_size, bool(cfg.data.skip_bad), int(cfg.images_per_study))
    vocab = load_vocabulary(out, pairs.texts, cfg.vocabulary)
    model = build_from_cfg(cfg, vocab)
    if accelerator.is_main_process:
        vocab.save(out)
    dataset: Dataset = pairs
    if model.encoder.frozen and cfg.cache_features:
        dataset = cached_tokens(model.encoder, pairs, out, accelerator, int(cfg.evaluation.batch_size))

    def collate_targets(items: list[dict]) -> dict:
        batch = collate(items)
        batch["targets"] = vocab.encode(batch.pop("text"))
        return batch

    result = train(accelerator, model, dataset, lambda m, batch: m(batch), cfg.trainer, out, int(cfg.seed), collate_fn=collate_targets)
    model = accelerator.unwrap_model(model).eval()
    if accelerator.is_main_process:
        generator = EncoderDecoderGenerator(model, vocab, OmegaConf.to_container(cfg.decoding, resolve=True))
        generator.save_pretrained(out / RUN_SUBDIR)
        metrics = {"encoder": str(cfg.encoder), "decoder": str(cfg.decoder), "views": list(cfg.views), "text": str(cfg.text),
                   "train_pairs": len(pairs), "images_per_study": int(cfg.images_per_study), "vocabulary": len(vocab), "visual_tokens": model.encoder.num_tokens,
                   "visual_width": model.encoder.width, "steps": result.step, **loss_summary(result.losses)}
        heldout = table[table["split"] == "validate"]
        if int(cfg.evaluation.max_reports) and len(heldout[heldout["view"].isin(list(cfg.views))]):
            validate = report_pairs(table, sections, "validate", cfg.views, str(cfg.text), model.encoder.image_size, bool(cfg.data.skip_bad))
            metrics.update(evaluate_heldout(generator, validate, cfg.evaluation, out))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", metrics)
    return out


def loss_summary(losses: list[float], window: int = 10) -> dict:
    """Mean training loss over the first and the last ``window`` steps this process ran."""
    if not losses:
        return {}
    return {"train_loss_first": float(np.mean(losses[:window])), "train_loss_last": float(np.mean(losses[-window:]))}


def evaluate_heldout(generator: EncoderDecoderGenerator, pairs: ImageReportDataset, eval_cfg, out: Path) -> dict:
    """Reports for up to ``max_reports`` held-out images: ``reports.csv`` and BLEU/ROUGE-L/CIDEr-D + CheXpert F1 (rules labeler)."""
    from torch.utils.data import Subset

    from cxr_irgen.text.chexpert_f1 import chexpert_f1_reports
    from cxr_irgen.text.text_metrics import text_metrics

    subset = Subset(pairs, range(min(len(pairs), int(eval_cfg.max_reports))))
    rows = []
    for batch in DataLoader(subset, batch_size=int(eval_cfg.batch_size), collate_fn=collate):
        reports = generator(batch["pixel_values"], batch_size=int(eval_cfg.batch_size))
        rows += [{"dicom_id": d, "reference": t, "generated": g} for d, t, g in zip(batch["dicom_id"], batch["text"], reports)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "reports.csv", index=False)
    text = text_metrics(frame["generated"].tolist(), frame["reference"].tolist(), with_meteor=False)
    f1 = chexpert_f1_reports(frame["generated"].tolist(), frame["reference"].tolist(), n_bootstrap=0)
    return {"heldout": {**{k: v for k, v in text.items() if v is not None}, "chexpert_f1_rules": f1, "distinct_reports": int(frame["generated"].nunique())}}
