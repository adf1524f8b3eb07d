"""`cxr-irgen train-language`: stage 1 (report autoencoder) or stage 2 (image → embedding prior).

    cxr-irgen train-language stage=autoencoder text=findings data=iu_xray language/model=bart-tiny
    cxr-irgen train-language stage=prior autoencoder=outputs/train_language/STAGE1 prior.input=clip

Both stages run the shared loop (:func:`cxr_irgen.utils.training.train`: Accelerate, mixed
precision, atomic checkpoints, ``trainer.resume=latest``). Run-dir layout:

- stage 1: ``autoencoder/`` (BART + tokenizer, :meth:`ReportAutoencoder.from_pretrained`),
  ``tokenizer/`` (the tokenizer, written before training so a resumed run reuses it),
  ``metrics.json`` and ``reconstructions.csv`` (held-out reports and their reconstructions).
- stage 2: ``prior/`` (:meth:`PriorViT.from_pretrained` + ``generator.json`` naming the
  autoencoder and the image representation; :meth:`LanguageChain.from_run_dir` reads it),
  ``features.safetensors`` (cached encoder inputs and target embeddings), ``metrics.json``
  and ``reports.csv`` (held-out images' references and generated reports).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from cxr_irgen.errors import UserError
from cxr_irgen.language.autoencoder import ReportAutoencoder, build_autoencoder
from cxr_irgen.language.generate import LanguageChain, write_generator_config
from cxr_irgen.language.prior import build_prior, prior_loss
from cxr_irgen.language.representation import build_image_representation
from cxr_irgen.language.tokenizer import token_length_summary
from cxr_irgen.utils.rundir import run_dir
from cxr_irgen.utils.training import make_accelerator, train
from cxr_irgen.vision.loading import freeze

log = logging.getLogger(__name__)

STAGES = ("autoencoder", "prior")
FEATURES_FILE = "features.safetensors"


def bleu4(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 (nltk ``corpus_bleu``, one reference each, lower-cased word tokens, no smoothing)."""
    from nltk.translate.bleu_score import corpus_bleu

    words = lambda text: re.findall(r"\w+", text.lower())  # noqa: E731
    return float(corpus_bleu([[words(r)] for r in references], [words(h) for h in hypotheses]))


def split_reports(texts: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """Shuffle ``texts`` with ``seed`` and cut them into train/validate/test by ``fractions`` (summing to 1)."""
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"iu_split={fractions}: give three non-negative train/validate/test fractions summing to 1")
    order = np.random.default_rng(seed).permutation(len(texts))
    n_train = int(round(fractions[0] * len(texts)))
    n_validate = int(round(fractions[1] * len(texts)))
    cuts = {"train": order[:n_train], "validate": order[n_train : n_train + n_validate], "test": order[n_train + n_validate :]}
    return {name: [texts[i] for i in idx] for name, idx in cuts.items()}


def stage1_reports(cfg: DictConfig) -> dict[str, list[str]]:
    """``{"train": [...], "heldout": [...]}`` report texts of the ``text`` variant.

    MIMIC layout (mimic, phantom): the train split's reports and the validate split's.
    IU X-ray: its reports split ``iu_split`` by report (seeded); held out is the test part.
    """
    from cxr_irgen.data.selections import language_stage1, stage1_texts

    variant = str(cfg.text)
    if cfg.data.name == "iu_xray":
        from cxr_irgen.data.iu_xray import load_iu_reports

        texts = stage1_texts(load_iu_reports(), variant)["text"].tolist()
        parts = split_reports(texts, cfg.iu_split, int(cfg.seed))
        log.info("IU X-ray %s: %d reports -> %s", variant, len(texts), {k: len(v) for k, v in parts.items()})
        return {"train": parts["train"], "heldout": parts["test"]}
    from cxr_irgen.data.adapters import load_sections, load_table

    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    train_texts = language_stage1(table, sections, variant)["text"].tolist()
    validate = sections[sections["study_id"].isin(table.loc[table["split"] == "validate", "study_id"])]
    heldout = stage1_texts(validate, variant)["text"].tolist()
    return {"train": train_texts, "heldout": heldout}


def loss_summary(losses: list[float], window: int = 10) -> dict:
    """Mean training loss over the first and the last ``window`` steps this process ran (empty when it ran none)."""
    if not losses:
        return {}
    return {"train_loss_first": float(np.mean(losses[:window])), "train_loss_last": float(np.mean(losses[-window:]))}


def _write_metrics(out: Path, metrics: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("metrics: %s", metrics)


def train_autoencoder(cfg: DictConfig) -> Path:
    """Stage 1: train the report autoencoder; returns the run dir."""
    from cxr_irgen.data.datasets import ReportTextDataset

    out = run_dir(cfg)
    reports = stage1_reports(cfg)
    if not reports["train"]:
        raise UserError(f"no {cfg.text} texts in the training selection of data={cfg.data.name}: check data.root or choose another text=")
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    model_cfg = cfg.model
    if (out / "tokenizer").is_dir():
        model_cfg = OmegaConf.merge(cfg.model, {"tokenizer": str(out / "tokenizer")})
    model = build_autoencoder(model_cfg, reports["train"])
    lengths = token_length_summary(model.tokenizer, reports["train"], model.max_length)
    log.info("stage-1 %s token lengths (model tokenizer): %s", cfg.text, lengths)
    if lengths["truncated"] > 0.01:
        log.warning("model.max_length=%d truncates %.1f%% of the training texts: raise model.max_length", model.max_length, 100 * lengths["truncated"])
    if accelerator.is_main_process:
        model.tokenizer.save_pretrained(out / "tokenizer")
    if cfg.trainer.gradient_checkpointing:
        model.bart.gradient_checkpointing_enable()

    result = train(
        accelerator, model, ReportTextDataset(reports["train"]), lambda m, batch: m(**batch),
        cfg.trainer, out, int(cfg.seed), collate_fn=model.tokenize,
    )
    model = accelerator.unwrap_model(model).eval()
    if accelerator.is_main_process:
        model.save_pretrained(out / "autoencoder")
        metrics = {"stage": "autoencoder", "text": str(cfg.text), "data": str(cfg.data.name), "train_reports": len(reports["train"]),
                   "token_lengths": lengths, **loss_summary(result.losses)}
        metrics.update(evaluate_reconstruction(model, reports["heldout"], cfg.evaluation, out))
        _write_metrics(out, metrics)
    return out


def evaluate_reconstruction(model: ReportAutoencoder, texts: list[str], eval_cfg, out: Path) -> dict:
    """Decode up to ``eval_cfg.max_reports`` held-out texts through the bottleneck; BLEU-4 and a CSV of pairs."""
    texts = texts[: int(eval_cfg.max_reports)]
    if not texts:
        return {"heldout_reports": 0}
    with torch.no_grad():
        embeddings = torch.cat([model.embed(chunk) for chunk in _chunks(texts, int(eval_cfg.batch_size))])
    decoded = model.decode(embeddings, max_length=int(eval_cfg.max_length), num_beams=int(eval_cfg.num_beams), batch_size=int(eval_cfg.batch_size))
    pd.DataFrame({"reference": texts, "reconstruction": decoded}).to_csv(out / "reconstructions.csv", index=False)
    return {
        "heldout_reports": len(texts), "reconstruction_bleu4": bleu4(decoded, texts), "exact_match": float(np.mean([a == b for a, b in zip(decoded, texts)])),
        "decoding": model.decoding_settings(max_length=int(eval_cfg.max_length), num_beams=int(eval_cfg.num_beams)),
    }


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def encode_pairs(pairs, representation, autoencoder: ReportAutoencoder, batch_size: int, num_workers: int = 0) -> dict[str, torch.Tensor | list[str]]:
    """One pass over an ``ImageReportDataset``: frozen prior ``inputs`` (N, *shape), target ``embeddings`` (N, d) and the
    ``dicom_ids`` (N) of the images read (an unreadable image skipped with ``data.skip_bad`` is replaced by another)."""
    from torch.utils.data import DataLoader

    from cxr_irgen.data.datasets import collate
    from cxr_irgen.utils.progress import progress_bar

    inputs, targets, dicom_ids = [], [], []
    with torch.no_grad():
        for batch in progress_bar(DataLoader(pairs, batch_size=batch_size, collate_fn=collate, num_workers=num_workers), desc="encode", dynamic_ncols=True):
            inputs.append(representation(batch["pixel_values"].to(autoencoder.device)).cpu())
            targets.append(autoencoder.embed(batch["text"]).float().cpu())
            dicom_ids += batch["dicom_id"]
    return {"inputs": torch.cat(inputs), "targets": torch.cat(targets), "dicom_ids": dicom_ids}


def cached_features(path: Path, compute, table: pd.DataFrame) -> dict[str, torch.Tensor]:
    """``compute()`` (:func:`encode_pairs`) once per run dir, with the CheXpert ``labels`` (N, 14) of its images from
    ``table``; later calls (resume) read ``path``."""
    from safetensors.torch import load_file, save_file

    from cxr_irgen.data.labels import CHEXPERT_LABELS

    if path.exists():
        return load_file(str(path))
    encoded = compute()
    labels = table.drop_duplicates("dicom_id").set_index("dicom_id").loc[encoded["dicom_ids"], list(CHEXPERT_LABELS)].to_numpy(np.float32)
    features = {"inputs": encoded["inputs"].contiguous(), "targets": encoded["targets"].contiguous(), "labels": torch.from_numpy(np.ascontiguousarray(labels))}
    save_file(features, str(path))
    return features


def prior_step(loss_kind: str, cos_weight: float, label_dropout: float):
    """The training step of a prior on batches (inputs, targets) or, for a prior that reads labels, (inputs, labels,
    targets); each label vector is dropped (all "not mentioned") with probability ``label_dropout``."""
    def step(prior, batch):
        if len(batch) == 2:
            return prior_loss(prior(batch[0]), batch[1], loss_kind, cos_weight)
        inputs, labels, targets = batch
        dropped = torch.rand(len(labels), device=labels.device) < label_dropout
        labels = torch.where(dropped[:, None], torch.full_like(labels, float("nan")), labels)
        return prior_loss(prior(inputs, labels), targets, loss_kind, cos_weight)

    return step


def train_prior(cfg: DictConfig) -> Path:
    """Stage 2: train the ViT prior on (frozen image representation → frozen stage-1 embedding); returns the run dir."""
    from torch.utils.data import TensorDataset

    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import ImageReportDataset
    from cxr_irgen.data.selections import language_stage2

    if not cfg.autoencoder:
        raise UserError("stage=prior needs autoencoder=RUN_DIR: the run dir of `cxr-irgen train-language stage=autoencoder`")
    if cfg.data.name == "iu_xray":
        raise UserError("stage=prior needs images with reports: use data=mimic or data=phantom (IU X-ray ships no images)")
    label_dropout = float(cfg.prior.get("label_dropout", 0.0))
    if not 0.0 <= label_dropout < 1.0:
        raise UserError(f"prior.label_dropout={label_dropout}: give a share in [0, 1) of training label vectors to hide")
    out = run_dir(cfg)
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    representation = build_image_representation(cfg.prior).to(accelerator.device)  # first: a wrong encoder fails before BART loads
    autoencoder = freeze(ReportAutoencoder.from_pretrained(cfg.autoencoder)).to(accelerator.device)

    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    size, skip_bad = int(cfg.data.image_size), bool(cfg.data.skip_bad)
    train_pairs = ImageReportDataset(language_stage2(table, "train"), sections, size, str(cfg.text), skip_bad)
    batch, workers = int(cfg.prior.encode_batch_size), int(cfg.trainer.num_workers)
    with accelerator.main_process_first():  # the main process writes the cache, the others read it
        features = cached_features(out / FEATURES_FILE, lambda: encode_pairs(train_pairs, representation, autoencoder, batch, workers), table)
    inputs, targets = features["inputs"], features["targets"]
    log.info("prior: %d training pairs, inputs %s, targets %s", len(targets), tuple(inputs.shape[1:]), tuple(targets.shape[1:]))

    prior = build_prior(cfg.prior, representation.input_shape, autoencoder.embedding_dim)
    loss_kind, cos_weight = str(cfg.prior.loss), float(cfg.prior.cos_weight)
    tensors = (inputs, features["labels"], targets) if prior.reads_labels else (inputs, targets)
    result = train(accelerator, prior, TensorDataset(*tensors), prior_step(loss_kind, cos_weight, label_dropout), cfg.trainer, out, int(cfg.seed))
    prior = accelerator.unwrap_model(prior).eval()
    if accelerator.is_main_process:
        prior.save_pretrained(out / "prior")
        write_generator_config(out / "prior", Path(cfg.autoencoder), cfg.prior, representation)
        metrics = {"stage": "prior", "text": str(cfg.text), "data": str(cfg.data.name), "input": str(cfg.prior.input), "labels": prior.reads_labels,
                   "loss": loss_kind, "train_pairs": len(targets), **loss_summary(result.losses)}
        validate = language_stage2(table, "validate")
        if int(cfg.evaluation.max_reports) and len(validate):
            pairs = ImageReportDataset(validate, sections, size, str(cfg.text), skip_bad)
            generator = LanguageChain(autoencoder, prior, representation)
            metrics.update(evaluate_prior(generator, pairs, cfg.evaluation, out))
        _write_metrics(out, metrics)
    return out


def evaluate_prior(generator: LanguageChain, pairs, eval_cfg, out: Path) -> dict:
    """Held-out image/report pairs: embedding cosine to the true report's embedding, BLEU-4 of generated reports, ``reports.csv``."""
    from torch.utils.data import DataLoader, Subset

    from cxr_irgen.data.datasets import collate

    pairs = Subset(pairs, range(min(len(pairs), int(eval_cfg.max_reports))))
    rows, cosines = [], []
    for batch in DataLoader(pairs, batch_size=int(eval_cfg.batch_size), collate_fn=collate):
        with torch.no_grad():
            predicted = generator.embeddings(batch["pixel_values"])
            target = generator.autoencoder.embed(batch["text"]).float()
        cosines.append(torch.nn.functional.cosine_similarity(predicted, target, dim=-1).cpu())
        reports = generator.autoencoder.decode(predicted, max_length=int(eval_cfg.max_length), num_beams=int(eval_cfg.num_beams))
        rows += [{"dicom_id": d, "reference": t, "generated": g} for d, t, g in zip(batch["dicom_id"], batch["text"], reports)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "reports.csv", index=False)
    return {
        "heldout_pairs": len(frame),
        "embedding_cosine": float(torch.cat(cosines).mean()),
        "report_bleu4": bleu4(frame["generated"].tolist(), frame["reference"].tolist()),
        "distinct_reports": int(frame["generated"].nunique()),
        "decoding": generator.autoencoder.decoding_settings(max_length=int(eval_cfg.max_length), num_beams=int(eval_cfg.num_beams)),
    }


def run(cfg: DictConfig) -> None:
    stage = str(cfg.stage)
    if stage == "autoencoder":
        train_autoencoder(cfg)
    elif stage == "prior":
        train_prior(cfg)
    else:
        raise UserError(f"stage={stage!r}: use one of {', '.join(STAGES)}")
