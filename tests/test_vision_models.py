"""Vision module building blocks: encoders, codecs, U-ViT key mapping, conditioning, pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from vision_helpers import one_thread  # noqa: F401  (autouse fixture)

from cxr_irgen.data.labels import parse_labels
from cxr_irgen.errors import UserError
from cxr_irgen.vision.codec import UnshuffleCodec, build_vae
from cxr_irgen.vision.conditioning import Conditioning
from cxr_irgen.vision.encoders import build_clip_image_encoder, build_text_encoder
from cxr_irgen.vision.model import build_encoders, build_trainable, vision_model_config
from cxr_irgen.vision.pipeline import VisionPipeline, save_images
from cxr_irgen.vision.uvit import UViT


def test_tokenizer_matches_open_clip():
    import open_clip

    tokenizer = build_text_encoder(vision_model_config("unet-tiny").text_encoder).tokenizer
    prompts = [
        "A chest X-Ray image with cardiomegaly and pleural effusion, without pneumothorax, and unclear about edema",
        "A chest X-Ray image",
        "Hello   World!! it's 3.14, don't",
    ]
    for prompt in prompts:
        ours = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        reference = open_clip.tokenize([prompt])[0].tolist()
        n = reference.index(49407) + 1
        assert ours[:n] == reference[:n]
        assert set(ours[n:]) <= {49407}


def test_clip_image_encoder_normalises_with_clip_mean_std():
    """Control: transformers' CLIPImageProcessor (OpenAI CLIP's mean/std, its own constants) on the same gray image as RGB,
    and one hand-computed pixel."""
    from transformers import CLIPImageProcessor

    encoder = build_clip_image_encoder(vision_model_config("unet-tiny").image_encoder)
    size = encoder.image_size
    images = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    processor = CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_convert_rgb=False)
    expected = processor([np.repeat(im.numpy(), 3, axis=0) for im in images], return_tensors="pt", input_data_format="channels_first").pixel_values
    torch.testing.assert_close(encoder.normalize(images), expected)
    gray = torch.full((1, 1, size, size), 0.5)
    torch.testing.assert_close(encoder.normalize(gray)[0, :, 3, 5], torch.tensor([0.0690, 0.1614, 0.3328]), atol=1e-4, rtol=0)  # (0.5 - mean) / std
    torch.testing.assert_close(encoder(images), encoder.model(pixel_values=expected).image_embeds)
    assert encoder(images).shape == (2, encoder.embed_dim)
    assert not torch.allclose(encoder(images), encoder.model(pixel_values=images.expand(-1, 3, -1, -1)).image_embeds)


def test_unshuffle_codec_is_exact_inverse():
    codec = UnshuffleCodec()
    images = torch.rand(3, 1, 32, 32)
    latents = codec.encode(images)
    assert latents.shape == (3, 4, 16, 16)
    torch.testing.assert_close(codec.decode(latents), images)
    wide = UnshuffleCodec(factor=4)  # the demo's 64 px model: (B, 16, 16, 16) latents
    images = torch.rand(3, 1, 64, 64)
    assert wide.encode(images).shape == (3, 16, 16, 16) and (wide.latent_channels, wide.downscale) == (16, 4)
    torch.testing.assert_close(wide.decode(wide.encode(images)), images)


def test_sd_vae_shapes_and_scaling():
    cfg = OmegaConf.create({"kind": "sd", "config": {"block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D"] * 2,
                                                    "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 4, "latent_channels": 4}})
    vae = build_vae(cfg)
    assert vae.scaling_factor == pytest.approx(0.18215) and vae.downscale == 2
    latents = vae.encode(torch.rand(2, 1, 16, 16))
    assert latents.shape == (2, 4, 8, 8)
    images = vae.decode(latents)
    assert images.shape == (2, 1, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_missing_pretrained_weights_is_one_line_naming_files(tmp_path):
    cfg = vision_model_config("unet-sd14")
    cfg.backbone.pretrained = str(tmp_path / "sd14")
    from cxr_irgen.vision.model import build_backbone

    with pytest.raises(UserError) as err:
        build_backbone(cfg.backbone, 768, 78)
    message = str(err.value)
    assert "\n" not in message and "diffusion_pytorch_model.safetensors" in message and str(tmp_path / "sd14" / "unet") in message


def official_uvit_state_dict(width=32, depth=4, patch=2, channels=4, tokens=64, mlp_ratio=4, num_classes=1001):
    """A state dict with the key names and shapes of baofff/U-ViT libs/uvit.py (mlp_time_embed=False, conv=True)."""
    g = torch.Generator().manual_seed(0)
    hidden = width * mlp_ratio

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def block(prefix, skip=False):
        out = {f"{prefix}.norm1.weight": r(width), f"{prefix}.norm1.bias": r(width), f"{prefix}.attn.qkv.weight": r(3 * width, width),
               f"{prefix}.attn.proj.weight": r(width, width), f"{prefix}.attn.proj.bias": r(width), f"{prefix}.norm2.weight": r(width),
               f"{prefix}.norm2.bias": r(width), f"{prefix}.mlp.fc1.weight": r(hidden, width), f"{prefix}.mlp.fc1.bias": r(hidden),
               f"{prefix}.mlp.fc2.weight": r(width, hidden), f"{prefix}.mlp.fc2.bias": r(width)}
        if skip:
            out.update({f"{prefix}.skip_linear.weight": r(width, 2 * width), f"{prefix}.skip_linear.bias": r(width)})
        return out

    state = {"patch_embed.proj.weight": r(width, channels, patch, patch), "patch_embed.proj.bias": r(width),
             "label_emb.weight": r(num_classes, width), "pos_embed": r(1, 2 + tokens, width),
             "norm.weight": r(width), "norm.bias": r(width), "decoder_pred.weight": r(patch * patch * channels, width),
             "decoder_pred.bias": r(patch * patch * channels), "final_layer.weight": r(channels, channels, 3, 3), "final_layer.bias": r(channels)}
    for i in range(depth // 2):
        state.update(block(f"in_blocks.{i}"))
        state.update(block(f"out_blocks.{i}", skip=True))
    state.update(block("mid_block"))
    return state


def test_uvit_official_key_mapping(tmp_path):
    official = official_uvit_state_dict()
    path = tmp_path / "imagenet256_uvit_large.pth"
    torch.save(official, path)
    small = dict(sample_size=16, width=32, depth=4, num_heads=4)
    model = UViT.from_uvit_checkpoint(path, cond_dim=24, num_condition_tokens=3, **small)
    ours = model.state_dict()
    torch.testing.assert_close(ours["down_blocks.1.attn.qkv.weight"], official["in_blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(ours["up_blocks.0.skip_linear.weight"], official["out_blocks.0.skip_linear.weight"])
    torch.testing.assert_close(ours["patch_embed.weight"], official["patch_embed.proj.weight"])
    torch.testing.assert_close(ours["proj_out.bias"], official["decoder_pred.bias"])
    torch.testing.assert_close(ours["conv_out.weight"], official["final_layer.weight"])
    torch.testing.assert_close(ours["norm_out.weight"], official["norm.weight"])
    torch.testing.assert_close(ours["mid_block.mlp.fc2.weight"], official["mid_block.mlp.fc2.weight"])
    pos = official["pos_embed"]
    torch.testing.assert_close(ours["pos_embed"], torch.cat([pos[:, :1].repeat(1, 3, 1), pos[:, 1:]], dim=1))
    assert ours["condition_proj.weight"].shape == (32, 24)
    assert not any("label_emb" in k for k in ours)
    out = model(torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 3, 24)).sample
    assert out.shape == (2, 4, 16, 16)

    official["bogus.weight"] = torch.zeros(1)
    torch.save(official, path)
    with pytest.raises(UserError):
        UViT.from_uvit_checkpoint(path, cond_dim=24, **small)


def test_uvit_from_scratch_trains_and_roundtrips(tmp_path):
    model = UViT(sample_size=8, patch_size=2, width=32, depth=2, num_heads=2, cond_dim=16, num_condition_tokens=1)
    model.enable_gradient_checkpointing()
    loss = model(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.randn(2, 1, 16)).sample.square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.save_pretrained(tmp_path / "uvit", safe_serialization=True)
    assert (tmp_path / "uvit" / "diffusion_pytorch_model.safetensors").exists()
    loaded = UViT.from_pretrained(tmp_path / "uvit")
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([5]), torch.randn(1, 1, 16)
    torch.testing.assert_close(loaded(x, t, c).sample, model.eval()(x, t, c).sample)


def features(batch=4, text_dim=8, image_dim=6):
    return {"text_hidden": torch.randn(batch, 77, text_dim), "text_pooled": torch.randn(batch, text_dim), "image_embeds": torch.randn(batch, image_dim)}


@pytest.mark.parametrize("mode,tokens,length", [("text", "sequence", 77), ("text", "pooled", 1), ("concat", "sequence", 78), ("average", "sequence", 1)])
def test_conditioning_modes_shapes(mode, tokens, length):
    cond = Conditioning(mode, text_dim=8, image_dim=6, text_tokens=tokens).eval()
    out = cond(features())
    assert out.shape == (4, length, 8) and cond.num_tokens == length


def test_condition_dropout_really_drops():
    feats = features(batch=64)
    always = Conditioning("concat", 8, 6, dropout=1.0).train()
    torch.testing.assert_close(always(feats), always.unconditional(64))
    never = Conditioning("concat", 8, 6, dropout=0.0).train()
    torch.testing.assert_close(never(feats), never.tokens(feats))
    torch.manual_seed(0)
    sometimes = Conditioning("average", 8, 6, dropout=0.5).train()
    dropped = (sometimes(feats) == sometimes.unconditional(64)).all(dim=(1, 2))
    assert 10 < int(dropped.sum()) < 54
    assert torch.equal(sometimes.eval()(feats), sometimes.tokens(feats))


def test_frozen_encoders_get_no_gradients():
    cfg = vision_model_config("unet-tiny")
    encoders = build_encoders(cfg)
    model = build_trainable(cfg, encoders).train()
    encoders.train()
    batch = {"prompt": ["A chest X-Ray image with cardiomegaly"] * 2, "pixel_values": torch.rand(2, 1, 32, 32), "reference_pixels": torch.rand(2, 1, 32, 32)}
    feats = encoders.encode_batch(batch)
    model(feats["latents"], torch.tensor([1, 999]), feats).square().mean().backward()
    frozen = list(encoders.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert not any(m.training for m in encoders.modules())
    assert all(p.grad is not None for p in model.backbone.parameters())


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    cfg = vision_model_config("unet-tiny")
    model = build_trainable(cfg, build_encoders(cfg))
    out = tmp_path_factory.mktemp("vision-run")
    model.save_pretrained(out / "model", cfg)
    return out


def test_pipeline_deterministic_by_seed(saved_model, tmp_path):
    pipe = VisionPipeline.from_run_dir(saved_model)
    labels = [parse_labels("Cardiomegaly=1"), parse_labels("No Finding=1")]
    refs = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    first = pipe(labels, refs, seeds=[1, 2], steps=4, guidance=3.0, scheduler="ddim")
    again = pipe(labels, refs, seeds=[1, 2], steps=4, guidance=3.0, scheduler="ddim")
    assert first.shape == (2, 1, 32, 32) and torch.equal(first, again)
    other = pipe(labels, refs, seeds=[3, 2], steps=4, guidance=3.0, scheduler="ddim")
    assert not torch.allclose(first[0], other[0])
    alone = pipe(labels[1:], refs[1:], seeds=[2], steps=4, guidance=3.0, scheduler="ddim")
    torch.testing.assert_close(alone[0], first[1], atol=1e-5, rtol=1e-5)
    for scheduler in ("pndm", "dpm++"):
        images = pipe(labels, refs, seeds=[1, 2], steps=3, scheduler=scheduler)
        assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()
    meta = pipe.image_meta(labels, [1, 2], ["ref-a", "ref-b"], steps=4, guidance=3.0, scheduler="ddim")
    paths = save_images(first, meta, tmp_path / "out")
    sidecar = json.loads(paths[0].with_suffix(".json").read_text())
    assert sidecar["labels"] == "Cardiomegaly=1" and sidecar["seed"] == 1 and sidecar["reference_id"] == "ref-a"
    assert sidecar["checkpoint_hash"] == pipe.checkpoint_hash and len(pipe.checkpoint_hash) == 12
    assert sidecar["prompt"] == "A chest X-Ray image with cardiomegaly" and sidecar["scheduler"] == "ddim"
