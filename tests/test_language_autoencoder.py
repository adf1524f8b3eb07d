"""Stage 1: the BART one-token autoencoder, its offline tokenizer, pad handling, EOS stopping, overfitting real IU X-ray findings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.data.iu_xray import load_iu_reports
from cxr_irgen.language.autoencoder import IGNORE_INDEX, POOLINGS, ReportAutoencoder, build_autoencoder, drop_words, reconstruction_loss
from cxr_irgen.language.train import bleu4
from cxr_irgen.utils.training import make_accelerator, train

TINY = Path(__file__).resolve().parents[1] / "configs" / "language" / "model" / "bart-tiny.yaml"


def tiny_model_cfg(**overrides):
    """configs/language/model/bart-tiny.yaml, shrunk further for speed unless overridden."""
    cfg = OmegaConf.load(TINY)
    cfg.vocab_size = 500
    cfg.config.update({"d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0})
    return OmegaConf.merge(cfg, overrides)


@pytest.fixture(scope="module")
def iu_findings() -> list[str]:
    reports = load_iu_reports()
    return [t for t in reports["findings"].tolist() if t][:200]


@pytest.fixture()
def tiny_autoencoder(iu_findings) -> ReportAutoencoder:
    torch.manual_seed(0)
    return build_autoencoder(tiny_model_cfg(), iu_findings)


def test_trained_tokenizer_has_bart_specials_and_reloads_offline(tiny_autoencoder, iu_findings, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = tiny_autoencoder.tokenizer
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    ids = tokenizer(iu_findings[0])["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == iu_findings[0]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(iu_findings[:3])["input_ids"] == tokenizer(iu_findings[:3])["input_ids"]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pad_never_contributes(iu_findings, pooling):
    """Padding a report (more pad columns, any ids there) changes neither its embedding nor its loss."""
    torch.manual_seed(0)
    model = build_autoencoder(tiny_model_cfg(pooling=pooling), iu_findings).eval()
    enc = model.tokenize(iu_findings[:1])
    pad = model.tokenizer.pad_token_id
    extra = 7
    padded_ids = torch.cat([enc["input_ids"], torch.full((1, extra), pad)], dim=1)
    padded_mask = torch.cat([enc["attention_mask"], torch.zeros(1, extra, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.embed(enc["input_ids"], enc["attention_mask"]), model.embed(padded_ids, padded_mask), atol=1e-5)
        loss = model(**enc)
        assert torch.allclose(loss, model(padded_ids, padded_mask), atol=1e-5)
        garbage_ids = padded_ids.clone()
        garbage_ids[:, -extra:] = 42  # ids under a zero mask are still ignored
        assert torch.allclose(loss, model(garbage_ids, padded_mask), atol=1e-5)


def test_loss_ignores_logits_at_ignored_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, IGNORE_INDEX, IGNORE_INDEX], [4, 5, 6, 7, 8]])
    changed = logits.clone()
    changed[0, 3:] = torch.randn(2, 11) * 100
    assert torch.allclose(reconstruction_loss(logits, labels), reconstruction_loss(changed, labels))
    changed[0, 2, 0] += 5.0
    assert not torch.allclose(reconstruction_loss(logits, labels), reconstruction_loss(changed, labels))


def test_word_dropout_masks_decoder_inputs_in_training_only(iu_findings):
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (64, 50))
    ids[:, 0], ids[:, 40:] = 2, 1
    dropped = drop_words(ids, 0.3, mask_token_id=4, pad_token_id=1)
    assert 0.25 < (dropped[:, 1:40] == 4).float().mean() < 0.35
    assert torch.equal(dropped[:, 0], ids[:, 0]) and torch.equal(dropped[:, 40:], ids[:, 40:])

    model = build_autoencoder(tiny_model_cfg(word_dropout=0.5), iu_findings)
    enc = model.tokenize(iu_findings[:4])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(**enc), model(**enc))
        model.train()
        assert not torch.equal(model(**enc), model(**enc))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_each_pooling_trains_one_step(iu_findings, pooling):
    torch.manual_seed(0)
    model = build_autoencoder(tiny_model_cfg(pooling=pooling), iu_findings)
    enc = model.tokenize(iu_findings[:4])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model(**enc)
    before.backward()
    assert model.bart.get_encoder().layers[0].fc1.weight.grad.abs().sum() > 0, "the encoder must get gradients through the bottleneck"
    optimizer.step()
    with torch.no_grad():
        assert model(**enc) < before


def test_decode_stops_at_eos(tiny_autoencoder):
    """With EOS the most likely token, generation ends after one decoder step, not max_length."""
    model = tiny_autoencoder.eval()
    with torch.no_grad():
        model.bart.final_logits_bias[0, model.tokenizer.eos_token_id] = 1e4
    calls = []
    model.bart.register_forward_hook(lambda *args: calls.append(1))
    reports = model.decode(torch.randn(3, model.embedding_dim), max_length=50)
    assert reports == ["", "", ""]
    assert len(calls) == 1


def test_save_and_reload_roundtrip(tiny_autoencoder, iu_findings, tmp_path):
    from transformers import AutoTokenizer

    model = tiny_autoencoder.eval()
    model.save_pretrained(tmp_path / "ae")
    assert (tmp_path / "ae" / "model.safetensors").exists()
    assert AutoTokenizer.from_pretrained(tmp_path / "ae")(iu_findings[0])["input_ids"] == model.tokenizer(iu_findings[0])["input_ids"]
    reloaded = ReportAutoencoder.from_pretrained(tmp_path / "ae").eval()
    assert reloaded.pooling == model.pooling and reloaded.max_length == model.max_length
    with torch.no_grad():
        embeddings = model.embed(iu_findings[:3])
        assert torch.allclose(embeddings, reloaded.embed(iu_findings[:3]), atol=1e-6)
    assert reloaded.decode(embeddings, max_length=12) == model.decode(embeddings, max_length=12)


def test_missing_pretrained_bart_is_one_line(iu_findings, tmp_path):
    from cxr_irgen.errors import UserError

    with pytest.raises(UserError) as err:
        build_autoencoder(tiny_model_cfg(pretrained=str(tmp_path / "no-bart")), iu_findings)
    assert "\n" not in str(err.value) and "place" in str(err.value)


@pytest.mark.slow
def test_overfits_real_iu_findings(iu_findings, tmp_path):
    """A 2-layer d=64 BART squeezed through one token reconstructs 16 real IU X-ray findings (BLEU-4 >= 0.9)."""
    texts = iu_findings[:16]
    torch.manual_seed(0)
    model = build_autoencoder(tiny_model_cfg(vocab_size=2000, config={"d_model": 64, "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "encoder_layers": 2, "decoder_layers": 2}), iu_findings)
    trainer = OmegaConf.create(
        {"max_steps": 100, "batch_size": 16, "grad_accum": 1, "lr": 3e-3, "betas": [0.9, 0.999], "weight_decay": 0.0, "warmup_steps": 0,
         "lr_schedule": "constant", "max_grad_norm": 1.0, "mixed_precision": "no", "ema_decay": None, "checkpoint_every": 1000,
         "keep_checkpoints": 1, "log_every": 50, "num_workers": 0, "resume": None}
    )
    result = train(make_accelerator(trainer, 0), model, texts, lambda m, b: m(**b), trainer, tmp_path, 0, collate_fn=model.tokenize)
    assert result.losses[-1] < 0.1 * result.losses[0]
    model.eval()
    with torch.no_grad():
        decoded = model.decode(model.embed(texts), max_length=128)
    assert bleu4(decoded, texts) >= 0.9, list(zip(decoded, texts))[:3]
