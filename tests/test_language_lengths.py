"""Report text for stage 1 (issue 10 item 3): the default max_length keeps IU X-ray findings + impression whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cxr_irgen.data.iu_xray import load_iu_reports
from cxr_irgen.data.selections import stage1_texts
from cxr_irgen.language.tokenizer import token_length_summary, train_bpe_tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "language" / "model"


@pytest.fixture(scope="module")
def iu_texts() -> dict[str, list[str]]:
    reports = load_iu_reports()
    return {variant: stage1_texts(reports, variant)["text"].tolist() for variant in ("findings+impression", "findings_impression_concat")}


def _tokenizers(texts: list[str]):
    from cxr_irgen.vision.encoders import build_tokenizer

    clip = build_tokenizer({"tokenizer": "openclip"})  # a 49k byte-level-style BPE, the granularity of bart-base's
    clip.model_max_length = 1 << 30
    return {"clip_bpe": clip, "iu_bpe_2000": train_bpe_tokenizer(texts, vocab_size=2000)}


def test_default_max_length_truncates_under_one_percent_of_iu_findings_impression(iu_texts):
    max_length = int(OmegaConf.load(CONFIGS / "bart-base.yaml").max_length)
    assert len(iu_texts["findings+impression"]) > len(iu_texts["findings_impression_concat"]) > 3000  # separate samples vs one per report
    for name, tokenizer in _tokenizers(iu_texts["findings_impression_concat"]).items():
        for variant, texts in iu_texts.items():
            summary = token_length_summary(tokenizer, texts, max_length)
            assert summary["truncated"] < 0.01, (name, variant, summary)
    old = token_length_summary(_tokenizers(iu_texts["findings_impression_concat"])["clip_bpe"], iu_texts["findings_impression_concat"], 128)
    assert old["truncated"] > 0.01  # the former default cut more than 1% of the concatenated texts


def test_token_length_summary_counts_special_tokens_and_the_cut_share():
    tokenizer = train_bpe_tokenizer(["a b c d e f g h"] * 20, vocab_size=300)
    summary = token_length_summary(tokenizer, ["a", "a b c d e f g h"], max_length=5)
    assert summary["n"] == 2 and summary["max"] > 5 and summary["truncated"] == 0.5 and summary["max_length"] == 5
