"""Stage 2 and report generation: the ViT prior's inputs and losses, pretrained ViT loading, frozen encoders,
train-language on phantoms (loss drops, resume equals uninterrupted), generation from a run dir and an image folder."""

from __future__ import annotations

import json
from pathlib import Path

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
SHAPES = {"clip": (32,), "latent": (4, 8, 8), "image": (1, 16, 16)}
TINY_BART = ["language/model=bart-tiny", "model.vocab_size=400", "model.config.d_model=32", "model.config.encoder_layers=1",
             "model.config.decoder_layers=1", "model.config.encoder_ffn_dim=64", "model.config.decoder_ffn_dim=64"]


def tiny_prior(input: str, **kwargs) -> PriorViT:
    return PriorViT(input, SHAPES[input], output_dim=24, width=32, depth=2, heads=4, mlp_dim=64, patch_size=4, clip_tokens=8, **kwargs)


@pytest.mark.parametrize("input", PRIOR_INPUTS)
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
    with pytest.raises(UserError):
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
    with pytest.raises(UserError):
        tiny_prior("image", pretrained=str(tmp_path / "bert"))
    with pytest.raises(UserError, match="place"):
        tiny_prior("image", pretrained=str(tmp_path / "missing"))


def test_prior_save_load_roundtrip(tmp_path):
    prior = tiny_prior("clip").eval()
    prior.save_pretrained(tmp_path / "prior")
    reloaded = PriorViT.from_pretrained(tmp_path / "prior").eval()
    x = torch.randn(2, 32)
    assert torch.equal(prior(x), reloaded(x))


@pytest.fixture(scope="module")
def stage1_run(phantom_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stage1")
    run_command("train-language", [
        "stage=autoencoder", f"data.root={phantom_root}", *TINY_BART, "trainer=cpu-tiny", "trainer.max_steps=20",
        "trainer.batch_size=8", "evaluation.max_reports=4", "evaluation.max_length=16", f"hydra.run.dir={out}",
    ])
    return out


def _prior_args(phantom_root, stage1_run, out, steps, resume=False):
    return [
        "stage=prior", f"autoencoder={stage1_run}", f"data.root={phantom_root}", "data.image_size=64", *TINY_BART, "language/prior=vit-tiny",
        "trainer=cpu-tiny", f"trainer.max_steps={steps}", "trainer.batch_size=16", "trainer.checkpoint_every=20", "trainer.lr=3e-3",
        "evaluation.max_reports=4", "evaluation.max_length=16", *(["trainer.resume=latest"] if resume else []), f"hydra.run.dir={out}",
    ]


def test_stage1_run_writes_a_loadable_autoencoder(stage1_run):
    from cxr_irgen.language.autoencoder import ReportAutoencoder

    metrics = json.loads((stage1_run / "metrics.json").read_text())
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["heldout_reports"] == 4 and (stage1_run / "reconstructions.csv").exists()
    assert metrics["decoding"]["max_new_tokens"] == 16 and metrics["decoding"]["no_repeat_ngram_size"] == 0  # the full decoding config is recorded
    assert metrics["token_lengths"]["n"] == metrics["train_reports"] and metrics["token_lengths"]["max_length"] == 128
    assert ReportAutoencoder.from_pretrained(stage1_run).embedding_dim == 32


def test_prior_loss_drops_and_generator_loads(phantom_root, stage1_run, tmp_path):
    from cxr_irgen.language.generate import ReportGenerator, generate_reports_for_folder

    out = tmp_path / "prior"
    run_command("train-language", _prior_args(phantom_root, stage1_run, out, 60))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_loss_last"] < 0.5 * metrics["train_loss_first"], metrics
    assert metrics["heldout_pairs"] == 4 and (out / "reports.csv").exists()

    generator = ReportGenerator.from_run_dir(out)
    assert not generator.prior.training and not any(p.requires_grad for p in generator.autoencoder.parameters())
    images = torch.rand(3, 1, 48, 48)
    reports = generator(images, batch_size=2, max_length=12)
    assert len(reports) == 3 and all(isinstance(r, str) for r in reports)
    assert generator(images, batch_size=3, max_length=12) == reports  # batching does not change greedy reports
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
    args = ["stage=autoencoder", f"data.root={phantom_root}", *TINY_BART, "model.config.dropout=0.1", "trainer=cpu-tiny",
            "trainer.batch_size=8", "trainer.checkpoint_every=3", "evaluation.max_reports=0"]
    run_command("train-language", [*args, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'straight'}"])
    run_command("train-language", [*args, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'resumed'}"])
    run_command("train-language", [*args, "trainer.max_steps=6", "trainer.resume=latest", f"hydra.run.dir={tmp_path / 'resumed'}"])
    straight = load_file(str(tmp_path / "straight" / "autoencoder" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "autoencoder" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_prior_without_autoencoder_is_one_line_error(phantom_root, tmp_path):
    with pytest.raises(SystemExit) as stop:
        run_command("train-language", ["stage=prior", f"data.root={phantom_root}", f"hydra.run.dir={tmp_path}"])
    assert stop.value.code == 2
