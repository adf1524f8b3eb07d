"""`cxr-irgen prepare-data`: build (or read the cached) index and report sections, log the selection counts.

    cxr-irgen prepare-data data=mimic data.root=/path/to/mimic-cxr-jpg
    cxr-irgen prepare-data data=phantom data.root=data/phantoms
    cxr-irgen prepare-data data=csv data.csv=/path/metadata.csv data.image_root=/path/images
    cxr-irgen prepare-data data=iu_xray

Each selection logs its count; the command prints the counts table and writes ``selections.json`` (the counts, the
token-length distribution of each stage-1 text variant with the share bart-base's max_length would truncate, and the
settings that produced them) into the run directory.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from cxr_irgen.data import selections
from cxr_irgen.data.adapters import load_sections, load_table
from cxr_irgen.utils.rundir import run_dir

log = logging.getLogger(__name__)
STAGE1_MAX_LENGTH = 256  # bart-base's model.max_length (configs/language/model/bart-base.yaml)


def selection_counts(table, sections, test_pa_n: int, seed: int) -> dict[str, int]:
    """Sizes of the data set and of every DESIGN 1.1 selection."""
    return {
        "images": len(table),
        "studies": int(table["study_id"].nunique()),
        "subjects": int(table["subject_id"].nunique()),
        **{f"images_{split}": int((table["split"] == split).sum()) for split in ("train", "validate", "test")},
        "studies_with_report": len(sections),
        "vision_train_pa": len(selections.vision_train(table)),
        **{f"language_stage1_{variant}": len(selections.language_stage1(table, sections, variant)) for variant in selections.STAGE1_VARIANTS},
        "language_stage2_train": len(selections.language_stage2(table, "train")),
        "vision_test_pa_sample": len(selections.vision_test(table, test_pa_n, seed)),
        **{f"language_test_{require}": len(selections.language_test(table, sections, require)) for require in selections.TEST_REQUIREMENTS},
    }


def stage1_token_lengths(table, sections, max_length: int) -> dict[str, dict]:
    """Token-length distribution of each stage-1 variant's training texts and the share ``max_length`` would truncate.

    Counted with CLIP's byte-level BPE (49k merges, shipped with open_clip, so it works offline): the
    granularity of BART's own 50k byte-level BPE; ``train-language`` logs the model tokenizer's counts.
    """
    from cxr_irgen.language.tokenizer import token_length_summary
    from cxr_irgen.vision.encoders import build_tokenizer

    tokenizer = build_tokenizer({"tokenizer": "openclip"})
    tokenizer.model_max_length = 1 << 30  # count, never truncate
    return {variant: token_length_summary(tokenizer, selections.language_stage1(table, sections, variant)["text"].tolist(), max_length) for variant in selections.STAGE1_VARIANTS}


def format_counts(counts: dict[str, int]) -> str:
    width = max(map(len, counts))
    return "\n".join(f"{name:<{width}}  {count:>9,}" for name, count in counts.items())


def run(cfg: DictConfig) -> None:
    table = load_table(cfg.data, rebuild=bool(cfg.rebuild))
    sections = load_sections(table, cfg.data)
    counts = selection_counts(table, sections, int(cfg.test_pa_n), int(cfg.seed))
    print(f"data={cfg.data.name}\n{format_counts(counts)}")
    lengths = stage1_token_lengths(table, sections, STAGE1_MAX_LENGTH)
    for variant, summary in lengths.items():
        log.info("stage-1 %s token lengths (CLIP BPE): %s", variant, summary)
    out = run_dir(cfg) / "selections.json"
    out.write_text(json.dumps({"data": cfg.data.name, "seed": int(cfg.seed), "test_pa_n": int(cfg.test_pa_n), "counts": counts, "token_lengths": lengths}, indent=2))
    log.info("wrote the selection counts to %s", out)
