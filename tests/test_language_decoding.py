"""Report decoding is what our config says, whatever the checkpoint's own generation defaults (issue 10 item 1)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from cxr_irgen.language.autoencoder import ReportAutoencoder
from cxr_irgen.language.tokenizer import train_bpe_tokenizer

TEXTS = ["the heart is normal in size. the lungs are clear.", "small left pleural effusion. no pneumothorax."] * 5


@pytest.fixture(scope="module")
def autoencoder() -> ReportAutoencoder:
    """A tiny BART whose greedy output repeats one word, carrying bart-base-like generation defaults."""
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    tokenizer = train_bpe_tokenizer(TEXTS, vocab_size=300)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    config = BartConfig(vocab_size=len(tokenizer), forced_eos_token_id=None, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, **ids)
    bart = BartForConditionalGeneration(config).eval()
    word = tokenizer(" clear", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        bart.final_logits_bias[0, word] = 20.0  # greedy: "clear clear clear ..." (a repeated trigram)
        bart.final_logits_bias[0, tokenizer.eos_token_id] = -20.0
    bart.generation_config = GenerationConfig(no_repeat_ngram_size=3, early_stopping=True, forced_bos_token_id=tokenizer.bos_token_id,
                                              num_beams=4, length_penalty=2.0, min_length=20, **ids)
    return ReportAutoencoder(bart, tokenizer).eval()


def _greedy(autoencoder: ReportAutoencoder, embeddings: torch.Tensor, steps: int) -> torch.Tensor:
    """Plain argmax decoding, one token at a time, through the same decoder: ids (B, 1 + steps)."""
    ids = torch.full((embeddings.shape[0], 1), autoencoder.bart.config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, autoencoder.logits(embeddings, ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_greedy_decoding_ignores_the_checkpoints_generation_defaults(autoencoder):
    embeddings = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    ids = _greedy(autoencoder, embeddings, steps=8)
    assert len(set(ids[:, 1:].flatten().tolist())) == 1  # the property: greedy repeats one token, hence trigrams
    expected = [t.strip() for t in autoencoder.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert autoencoder.decode(embeddings, max_length=8, num_beams=1) == expected


def test_decoding_settings_name_every_field_that_changes_the_output(autoencoder):
    settings = autoencoder.decoding_settings(max_length=8, num_beams=3)
    assert settings["no_repeat_ngram_size"] == 0 and settings["length_penalty"] == 1.0 and settings["early_stopping"] is False
    assert settings["forced_bos_token_id"] is None and settings["num_beams"] == 3 and settings["min_new_tokens"] == 0
    json.dumps(settings)  # recorded as JSON in metrics.json and in the generate sidecars
    sampled = autoencoder.decoding_settings(do_sample=True, top_p=0.8)
    assert sampled["do_sample"] and sampled["top_p"] == 0.8 and sampled["top_k"] == 0


def test_no_repeat_ngram_size_is_a_named_setting_that_stops_the_repeats(autoencoder):
    """``no_repeat_ngram_size`` (generate's ``language.no_repeat_ngram_size``) is recorded and forbids a repeated n-gram."""
    embeddings = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    assert autoencoder.decoding_settings(no_repeat_ngram_size=2)["no_repeat_ngram_size"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = autoencoder.decode(embeddings, max_length=8)
        blocked = autoencoder.decode(embeddings, max_length=8, no_repeat_ngram_size=2)
    for text in blocked:
        ids = autoencoder.tokenizer(text, add_special_tokens=False).input_ids
        assert len(set(zip(ids, ids[1:]))) == len(ids) - 1, text
    assert blocked != plain  # greedy alone repeats "clear"
