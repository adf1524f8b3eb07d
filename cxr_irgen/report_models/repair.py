"""CXR-RePaiR as a report generator: CLIP fine-tuned on image–impression pairs, then retrieval.

    cxr-irgen train-repair data.root=... clip=vit-b32 clip_args.pretrained=openai_vit_b32.safetensors
    generator = load_report_generator("outputs/train_repair/RUN")       # kind "repair"
    generator(images, k=2)            # RePaiR-2: the 2 nearest corpus sentences, joined
    generator(images, select=True)    # RePaiR-Select: k=1 if the labeler says No Finding on it, else k=6

Training is the CLIP contrastive loss (symmetric cross-entropy over the batch's image–text
similarities, learned temperature) on the train split's frontal images and their
impressions, on the shared trainer. The corpus (``corpus.splits`` impressions at
``corpus.level``) is then embedded once by the fine-tuned text tower into a
:class:`~cxr_irgen.report_models.retrieval.CorpusIndex` saved with the generator.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.encoders import VisualEncoder, build_clip, clip_contrastive_loss
from cxr_irgen.report_models.interface import GENERATOR_FILE, RUN_SUBDIR, ReportGenerator, register_report_generator
from cxr_irgen.report_models.retrieval import CorpusIndex, select_reports
from cxr_irgen.report_models.weights import load_strict, read_weights

log = logging.getLogger(__name__)
WEIGHTS_FILE = "clip.safetensors"
INDEX_DIR = "index"
DECODE_DEFAULTS = {"k": 2, "select": False}


class RetrievalClip(VisualEncoder):
    """Both CLIP towers: images (B, 1, H, W) in [0, 1] → (B, 1, D) image embeddings; texts → (B, D) text embeddings."""

    def __init__(self, clip: dict, image_size: int, normalization: str = "clip"):
        super().__init__(image_size, normalization, frozen=False)
        from open_clip.tokenizer import SimpleTokenizer

        self.clip = build_clip(clip)
        self.tokenizer = SimpleTokenizer(context_length=self.clip.context_length)
        self.measure()

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixels).unsqueeze(1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, context_length) BPE ids, cut to the context length."""
        return self.tokenizer(list(texts))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.parameters()).device
        with torch.no_grad():
            return self.clip.encode_text(self.tokenize(texts).to(device)).float().cpu()

    def contrastive_loss(self, pixel_values: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of the batch's matched (image, text) pairs."""
        images = F.normalize(self(pixel_values)[:, 0], dim=-1)
        texts = F.normalize(self.clip.encode_text(text_ids), dim=-1)
        return clip_contrastive_loss(images, texts, self.clip.logit_scale)


@register_report_generator("repair")
class RepairGenerator(ReportGenerator):
    """Fine-tuned CLIP image tower + corpus index; decoding options ``k`` (1–6) and ``select``."""

    def __init__(self, model: RetrievalClip, index: CorpusIndex, clip_cfg: dict, decoding: dict | None = None):
        self.model = model.eval()
        self.index = index
        self.clip_cfg = clip_cfg
        self.decoding = {**DECODE_DEFAULTS, **(decoding or {})}
        self.image_size = model.image_size

    def to(self, device: torch.device | str) -> "RepairGenerator":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def options(self, **decode: Any) -> dict:
        """``k`` and ``select`` from the saved defaults and ``decode``; beam options do not apply and are ignored."""
        if decode.pop("do_sample", False):
            raise UserError("retrieval (repair) reports are not sampled: set do_sample=false")
        for ignored in ("num_beams", "max_length", "top_p", "length_penalty", "block_trigrams"):
            decode.pop(ignored, None)
        unknown = set(decode) - set(DECODE_DEFAULTS)
        if unknown:
            raise UserError(f"unknown retrieval option(s) {sorted(unknown)}; use k=1..6 or select=true")
        options = {**self.decoding, **{key: value for key, value in decode.items() if value is not None}}
        if not 1 <= int(options["k"]) <= 6:
            raise UserError(f"k={options['k']}: RePaiR joins 1 to 6 retrieved impressions")
        return options

    def decoding_settings(self, **decode: Any) -> dict:
        return {"strategy": "retrieval", **self.options(**decode)}

    def generate(self, images: torch.Tensor, **decode: Any) -> list[str]:
        options = self.options(**decode)
        embeddings = self.model(images)[:, 0]
        _, ids = self.index.topk(embeddings, 6 if options["select"] else int(options["k"]))
        if options["select"]:
            return select_reports(self.index.reports(ids, 1), self.index.reports(ids, 6))
        return self.index.reports(ids)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``clip.safetensors``, ``index/`` and ``report_generator.json`` (CLIP config, image size, decoding defaults)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(directory / WEIGHTS_FILE))
        self.index.save(directory / INDEX_DIR)
        self.write_kind(directory, clip=self.clip_cfg, image_size=self.image_size, decoding=self.decoding)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "RepairGenerator":
        directory = Path(directory)
        record = json.loads((directory / GENERATOR_FILE).read_text())
        model = RetrievalClip(record["clip"], int(record["image_size"]))
        load_strict(model, read_weights(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
        return cls(model, CorpusIndex.load(directory / INDEX_DIR), record["clip"], record["decoding"])


def corpus_impressions(table, sections, splits) -> list[str]:
    """Impressions of the studies in ``splits``, in study order."""
    from cxr_irgen.data.selections import stage1_texts

    studies = table.loc[table["split"].isin(list(splits)), "study_id"].unique()
    rows = sections[sections["study_id"].isin(studies)].sort_values("study_id")
    return stage1_texts(rows, "impression")["text"].tolist()


def run(cfg: DictConfig) -> Path:
    """``train-repair``: fine-tune CLIP contrastively, embed the corpus, save ``report_model/``, score held-out reports."""
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import collate
    from cxr_irgen.report_models.train import evaluate_heldout, report_pairs
    from cxr_irgen.utils.rundir import run_dir
    from cxr_irgen.utils.training import make_accelerator, train

    clip_cfg = OmegaConf.to_container(report_model_config("clip", str(cfg.clip), cfg.get("clip_args")), resolve=True)
    pretrained, image_size = clip_cfg.pop("pretrained", None), int(clip_cfg.pop("image_size"))
    out = run_dir(cfg)
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    pairs = report_pairs(table, sections, "train", cfg.views, "impression", image_size, bool(cfg.data.skip_bad))
    model = RetrievalClip(clip_cfg, image_size)
    if pretrained:
        load_strict(model.clip, read_weights(pretrained), pretrained)
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))

    def collate_text(items: list[dict]) -> dict:
        batch = collate(items)
        batch["text_ids"] = model.tokenize(batch.pop("text"))
        return batch

    result = train(accelerator, model, pairs, lambda m, b: m.contrastive_loss(b["pixel_values"], b["text_ids"]), cfg.trainer, out,
                   int(cfg.seed), collate_fn=collate_text)
    model = accelerator.unwrap_model(model).eval()
    if accelerator.is_main_process:
        impressions = corpus_impressions(table, sections, cfg.corpus.splits)
        index = CorpusIndex.build(impressions, model.embed_texts, str(cfg.corpus.level), int(cfg.corpus.batch_size), encoder="clip")
        generator = RepairGenerator(model, index, clip_cfg, OmegaConf.to_container(cfg.decoding, resolve=True))
        generator.save_pretrained(out / RUN_SUBDIR)
        metrics = {"train_pairs": len(pairs), "corpus_level": index.level, "corpus_size": len(index.texts), "steps": result.step,
                   "train_loss_first": result.losses[0] if result.losses else None, "train_loss_last": result.losses[-1] if result.losses else None}
        heldout = table[(table["split"] == "validate") & table["view"].isin(list(cfg.views))]
        if int(cfg.evaluation.max_reports) and len(heldout):
            validate = report_pairs(table, sections, "validate", cfg.views, "impression", image_size, bool(cfg.data.skip_bad))
            metrics.update(evaluate_heldout(generator, validate, cfg.evaluation, out))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", metrics)
    return out
