"""Stage 2 and report generation: the ViT prior's inputs and losses, pretrained ViT loading, frozen encoders,
train-language on phantoms (loss drops, resume equals uninterrupted), generation from a run dir and an image folder."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from cxr_irgen.cli import run_command
from cxr_irgen.errors import UserError
from cxr_irgen.language.prior import PRIOR_INPUTS, PRIOR_LOSSES, PriorViT, prior_loss
from cxr_irgen.language.representation import build_image_representation

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "language"
TEXT = "impression"
SHAPES = {"clip": (32,), "latent": (4, 8, 8), "image": (1, 16, 16)}
TINY_BART = ["language/model=bart-tiny", "model.vocab_size=400", "model.config.d_model=32", "model.config.encoder_layers=1",
             "model.config.decoder_layers=1", "model.config.encoder_ffn_dim=64", "model.config.decoder_ffn_dim=64"]


def tiny_prior(input: str, **kwargs) -> PriorViT:
    return PriorViT(input, SHAPES[input], output_dim=24, width=32, depth=2, heads=4, mlp_dim=64, patch_size=4, clip_tokens=8, **kwargs)


@pytest.mark.parametrize("input", [i for i in PRIOR_INPUTS if i != "classifier"])  # classifier: test_language_prior_classifier.py
def test_representation_is_frozen_and_matches_the_prior(input):
    prior_cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "prior" / "vit-tiny.yaml"), {"input": input})
    representation = build_image_representation(prior_cfg).train()
    assert not representation.training and not any(p.requires_grad for p in representation.parameters())
    assert representation.input_shape == SHAPES[input]
    features = representation(torch.rand(3, 1, 64, 64))
    assert features.shape == (3, *SHAPES[input]) and not features.requires_grad
    assert tiny_prior(input)(features).shape == (3, 24)


def test_prior_output_is_unbounded():
    prior = tiny_prior("clip")
    with torch.no_grad():
        prior.head.bias.fill_(5.0)
    assert prior(torch.randn(2, 32)).min() > 1.0


@pytest.mark.parametrize("kind", PRIOR_LOSSES)
def test_each_loss_trains_one_step(kind):
    torch.manual_seed(0)
    prior = tiny_prior("latent")
    x, target = torch.randn(8, *SHAPES["latent"]), torch.randn(8, 24)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-3)
    before = prior_loss(prior(x), target, kind)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        assert prior_loss(prior(x), target, kind) < before


def test_loss_definitions():
    p, t = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mse, cos = torch.tensor(0.75), torch.tensor(0.5)  # mean squared error; mean(1 - cos): (1 - 0 + 1 - 1) / 2
    assert torch.isclose(prior_loss(p, t, "mse"), mse)
    assert torch.isclose(prior_loss(p, t, "cos"), cos)
    assert torch.isclose(prior_loss(p, t, "mse+cos", cos_weight=0.01), mse + 0.01 * cos)
    with pytest.raises(UserError, match="prior.loss='l1': use one of mse\\+cos, mse, cos"):
        prior_loss(p, t, "l1")


def test_pretrained_vit_is_really_loaded(tmp_path):
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    prior = tiny_prior("image", pretrained=str(tmp_path / "vit"))
    loaded, saved = prior.blocks.state_dict(), vit.layers.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert torch.equal(prior.norm.weight, vit.layernorm.weight) and torch.equal(prior.cls_token, vit.embeddings.cls_token)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=50)).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="ViT weights missing from the checkpoint .*not a ViTModel checkpoint"):
        tiny_prior("image", pretrained=str(tmp_path / "bert"))
    with pytest.raises(UserError, match="place"):
        tiny_prior("image", pretrained=str(tmp_path / "missing"))


def test_prior_save_load_roundtrip(tmp_path):
    prior = tiny_prior("clip").eval()
    prior.save_pretrained(tmp_path / "prior")
    reloaded = PriorViT.from_pretrained(tmp_path / "prior").eval()
    x = torch.randn(2, 32)
    assert torch.equal(prior(x), reloaded(x))


def test_label_tokens_tell_the_states_apart_and_none_means_not_mentioned(tmp_path):
    prior = tiny_prior("clip", labels=True).eval()
    x = torch.randn(1, 32).expand(4, 32)
    labels = torch.full((4, 14), float("nan"))
    labels[0, 1], labels[1, 1], labels[2, 1] = 1.0, 0.0, -1.0
    out = prior(x, labels)
    assert all(not torch.allclose(out[i], out[j]) for i in range(4) for j in range(i + 1, 4))
    assert torch.equal(prior(x), prior(x, torch.full((4, 14), float("nan"))))
    prior.save_pretrained(tmp_path / "prior")
    reloaded = PriorViT.from_pretrained(tmp_path / "prior").eval()
    assert reloaded.reads_labels and torch.equal(reloaded(x, labels), out)
    with pytest.raises(UserError, match="14 values"):
        prior(x, labels[:, :5])
    with pytest.raises(UserError, match="without label tokens"):
        tiny_prior("clip")(x, labels)


def test_label_dropout_hides_whole_vectors():
    from cxr_irgen.language.train import prior_step

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, labels=None):
            seen.append(labels)
            return x

    inputs, targets, labels = torch.zeros(400, 3), torch.zeros(400, 3), torch.ones(400, 14)
    torch.manual_seed(0)
    prior_step("mse", 0.0, 0.25)(Recorder(), (inputs, labels, targets))
    dropped = seen[0].isnan()
    assert torch.equal(dropped.all(1), dropped.any(1)) and 0.18 < dropped.all(1).float().mean() < 0.32
    prior_step("mse", 0.0, 0.0)(Recorder(), (inputs, labels, targets))
    assert torch.equal(seen[1], labels)


@pytest.fixture(scope="module")
def stage1_run(phantom_root, tmp_path_factory) -> Path:
    """150 steps on the impressions of the 240-phantom tree. Word dropout 0.3 and no dropout keep the tiny decoder reading the
    bottleneck: with the paper's setting (none) and 20 steps every reconstruction was "...." (BLEU 0, targets' cosine 0.995)."""
    out = tmp_path_factory.mktemp("stage1")
    run_command("train-language", [
        "stage=autoencoder", f"data.root={phantom_root}", f"text={TEXT}", *TINY_BART, "model.word_dropout=0.3", "model.config.dropout=0.0",
        "trainer=cpu-tiny", "trainer.max_steps=150", "trainer.batch_size=16", "trainer.lr=3e-3",
        "evaluation.max_reports=16", "evaluation.max_length=48", f"hydra.run.dir={out}",
    ])
    return out


def _prior_args(phantom_root, stage1_run, out, steps, resume=False):
    return [
        "stage=prior", f"autoencoder={stage1_run}", f"data.root={phantom_root}", f"text={TEXT}", "data.image_size=64", *TINY_BART, "language/prior=vit-tiny",
        "trainer=cpu-tiny", f"trainer.max_steps={steps}", "trainer.batch_size=16", "trainer.checkpoint_every=20", "trainer.lr=3e-3",
        "evaluation.max_reports=16", "evaluation.max_length=48", *(["trainer.resume=latest"] if resume else []), f"hydra.run.dir={out}",
    ]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]{2,}", text.lower())


def _train_texts(phantom_root) -> list[str]:
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.sections import load_report_sections
    from cxr_irgen.data.selections import language_stage1

    table = load_index(phantom_root)
    return language_stage1(table, load_report_sections(table), TEXT)["text"].tolist()


@pytest.mark.slow
def test_stage1_run_writes_a_loadable_autoencoder(stage1_run, phantom_root):
    """Controls: the most frequent training report written for every held-out report (BLEU-4), and the unigram entropy of the
    training tokens (the loss of a decoder that reads neither the bottleneck nor the context). Measured: BLEU-4 0.028 vs 0.0;
    last training loss 2.63 nats vs unigram entropy 4.52; 11 distinct reconstructions of 14."""
    from cxr_irgen.language.autoencoder import ReportAutoencoder
    from cxr_irgen.language.train import bleu4

    metrics = json.loads((stage1_run / "metrics.json").read_text())
    pairs = pd.read_csv(stage1_run / "reconstructions.csv").fillna("")
    assert metrics["heldout_reports"] == len(pairs) >= 12  # the validate split's impressions, at most 16
    assert metrics["decoding"]["max_new_tokens"] == 48 and metrics["decoding"]["no_repeat_ngram_size"] == 0  # the full decoding config is recorded
    assert metrics["token_lengths"]["n"] == metrics["train_reports"] and metrics["token_lengths"]["max_length"] == 128
    train_texts = _train_texts(phantom_root)
    most_frequent = Counter(train_texts).most_common(1)[0][0]
    control_bleu = bleu4([most_frequent] * len(pairs), pairs["reference"].tolist())
    assert metrics["reconstruction_bleu4"] > max(0.01, control_bleu), (metrics, control_bleu)
    assert pairs["reconstruction"].nunique() >= len(pairs) // 2 and all(len(_words(r)) >= 3 for r in pairs["reconstruction"])

    autoencoder = ReportAutoencoder.from_pretrained(stage1_run)
    counts = Counter(token for text in train_texts for token in autoencoder.tokenizer(text)["input_ids"])
    frequencies = np.array(list(counts.values()), dtype=np.float64) / sum(counts.values())
    unigram_entropy = float(-(frequencies * np.log(frequencies)).sum())
    assert metrics["train_loss_last"] < 0.8 * unigram_entropy, (metrics, unigram_entropy)
    assert autoencoder.embedding_dim == 32


@pytest.mark.slow
def test_prior_loss_drops_and_generator_loads(phantom_root, stage1_run, tmp_path):
    """Control: the mean training target embedding predicted for every image (the issue measured a collapsed fixture where
    it scored 0.0037 against the prior's 0.0042). Measured here: prior 0.117 vs control 0.122 on the training pairs."""
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.language.generate import LanguageChain, generate_reports_for_folder

    out = tmp_path / "prior"
    run_command("train-language", _prior_args(phantom_root, stage1_run, out, 200))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_loss_last"] < 0.6 * metrics["train_loss_first"], metrics
    assert metrics["heldout_pairs"] >= 12 and (out / "reports.csv").exists()

    generator = LanguageChain.from_run_dir(out)
    assert not generator.prior.training and not any(p.requires_grad for p in generator.autoencoder.parameters())
    features = load_file(str(out / "features.safetensors"))
    targets = features["targets"]
    with torch.no_grad():
        trained = prior_loss(generator.prior(features["inputs"]), targets, "mse+cos").item()
    control = prior_loss(targets.mean(0, keepdim=True).expand_as(targets), targets, "mse+cos").item()
    assert trained < 0.98 * control, (trained, control)

    heldout = pd.read_csv(out / "reports.csv").fillna("")
    assert metrics["distinct_reports"] == heldout["generated"].nunique() >= 2 and all(len(_words(r)) >= 3 for r in heldout["generated"])
    paths = load_index(phantom_root).set_index("dicom_id").loc[heldout["dicom_id"], "image_path"]
    images = torch.stack([read_image(p, 64) for p in paths])
    reports = generator(images, batch_size=5, max_length=48)
    assert len(reports) == len(images) and len(set(reports)) >= 2
    assert generator(images, batch_size=16, max_length=48) == reports  # batching does not change greedy reports
    assert len(generator(images[:2], num_beams=2, max_length=12)) == 2
    assert len(generator(images[:2], do_sample=True, top_p=0.9, max_length=12)) == 2

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((images[i, 0].numpy() * 255).astype("uint8")).save(folder / f"{i}.png")
    table = generate_reports_for_folder(folder, generator, out_csv=tmp_path / "reports.csv", batch_size=2, max_length=12)
    assert list(table.columns) == ["image", "report"] and len(table) == 3 and (tmp_path / "reports.csv").exists()


def test_prior_resume_equals_uninterrupted(phantom_root, stage1_run, tmp_path):
    run_command("train-language", _prior_args(phantom_root, stage1_run, tmp_path / "straight", 40))
    run_command("train-language", _prior_args(phantom_root, stage1_run, tmp_path / "resumed", 20))
    run_command("train-language", _prior_args(phantom_root, stage1_run, tmp_path / "resumed", 40, resume=True))
    straight = load_file(str(tmp_path / "straight" / "prior" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "prior" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_stage1_resume_equals_uninterrupted(phantom_root, tmp_path):
    args = ["stage=autoencoder", f"data.root={phantom_root}", *TINY_BART, "model.config.dropout=0.1", "model.word_dropout=0.3", "trainer=cpu-tiny",
            "trainer.batch_size=8", "trainer.checkpoint_every=3", "evaluation.max_reports=0"]
    run_command("train-language", [*args, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'straight'}"])
    run_command("train-language", [*args, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'resumed'}"])
    run_command("train-language", [*args, "trainer.max_steps=6", "trainer.resume=latest", f"hydra.run.dir={tmp_path / 'resumed'}"])
    straight = load_file(str(tmp_path / "straight" / "autoencoder" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "autoencoder" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_prior_without_autoencoder_is_one_line_error(phantom_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_command("train-language", ["stage=prior", f"data.root={phantom_root}", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "stage=prior needs autoencoder=RUN_DIR" in err[0]
