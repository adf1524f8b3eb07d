"""Vision fidelity (issue 10): the feature cache holds what the model needs, the U-ViT's own noise schedule,
named conditioning spaces and the released presets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from vision_helpers import one_thread  # noqa: F401  (autouse fixture)

from cxr_irgen.cli import run_command

TINY = ["vision/model=unet-tiny", "trainer=cpu-tiny", "sample_every=0"]


def test_rie_run_refuses_a_text_only_feature_cache_in_one_line(tmp_path, phantom_root, capsys):
    prep = tmp_path / "prep"
    run_command("train-vision", [*TINY, f"data.root={phantom_root}", f"hydra.run.dir={prep}", "prepare=true", "max_images=6", "vision.model.conditioning.mode=text"])
    capsys.readouterr()
    run = tmp_path / "rie"
    with pytest.raises(SystemExit) as exit_info:
        run_command("train-vision", [*TINY, f"data.root={phantom_root}", f"hydra.run.dir={run}", f"features={prep / 'features'}", "trainer.max_steps=1"])
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1 and "holds no image_embeds" in error[0] and "prepare=true" in error[0]
    assert not (run / "model").exists()
    # the text-only model itself accepts that cache
    from cxr_irgen.vision.features import check_feature_cache
    from cxr_irgen.vision.model import vision_model_config

    assert check_feature_cache(prep / "features", vision_model_config("unet-tiny", ["conditioning.mode=text"]))["contents"] == ["latents", "text_hidden", "text_pooled"]



def _schedule(model: str) -> dict:
    """The resolved ``noise_schedule`` of a ``vision/model`` config."""
    from cxr_irgen.vision.loading import plain
    from cxr_irgen.vision.model import vision_model_config

    return plain(vision_model_config(model).noise_schedule)


def test_uvit_l2_defaults_to_its_checkpoints_vp_schedule_and_released_keeps_sd():
    from cxr_irgen.vision.model import build_noise_scheduler

    vp, released = _schedule("uvit-l2"), _schedule("uvit-l2-released")
    assert vp["kind"] == "uvit_vp" and released["kind"] == "sd_scaled_linear" and _schedule("unet-sd14")["kind"] == "sd_scaled_linear"
    alpha_bar_vp = build_noise_scheduler(SimpleNamespace(noise_schedule=vp)).alphas_cumprod
    alpha_bar_sd = build_noise_scheduler(SimpleNamespace(noise_schedule=released)).alphas_cumprod
    assert float(alpha_bar_vp[499]) == pytest.approx(0.0791, abs=5e-4) and float(alpha_bar_vp[749]) == pytest.approx(0.0034, abs=2e-4)  # t = 0.5, 0.75
    assert float(alpha_bar_sd[500]) == pytest.approx(0.276, abs=2e-3) and float(alpha_bar_sd[750]) == pytest.approx(0.056, abs=2e-3)


class OracleBackbone(torch.nn.Module):
    """The exact predictor for data that is one fixed latent ``x0``, reading its time input as U-ViT does (t = input / 999,
    VP-SDE); it outputs the noise, the clean latent or the velocity (``output``: a prediction type)."""

    def __init__(self, x0: torch.Tensor, output: str = "epsilon"):
        super().__init__()
        self.x0, self.output = x0, output
        self.seen: list[torch.Tensor] = []

    def forward(self, sample, timestep, encoder_hidden_states):
        self.seen.append(torch.as_tensor(timestep).detach().reshape(-1).clone())
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1, 1, 1, 1).expand(sample.shape[0], 1, 1, 1) / 999
        alpha_bar = torch.exp(-(0.1 * t + 0.5 * (20.0 - 0.1) * t**2))
        eps = (sample.double() - alpha_bar.sqrt() * self.x0) / (1 - alpha_bar).sqrt()
        outputs = {"epsilon": eps, "sample": self.x0.expand_as(eps), "v_prediction": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * self.x0}
        return SimpleNamespace(sample=outputs[self.output].float())


def _oracle_model(noise_schedule: dict, x0: torch.Tensor, output: str = "epsilon"):
    from cxr_irgen.vision.conditioning import Conditioning
    from cxr_irgen.vision.model import VisionModel
    from cxr_irgen.vision.schedules import BackboneTime

    return VisionModel(OracleBackbone(x0, output), Conditioning("text", 4, 4, text_tokens="pooled", dropout=0.0), BackboneTime(noise_schedule)).eval()


X0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)).double()


def test_vp_training_noise_and_time_input_match_the_checkpoints_convention():
    """Under the VP schedule an exact U-ViT-convention predictor has zero loss; under SD's schedule it does not."""
    from cxr_irgen.vision.model import build_noise_scheduler
    from cxr_irgen.vision.train import diffusion_loss

    features = {"latents": X0.float().expand(64, -1, -1, -1), "text_pooled": torch.zeros(64, 4)}
    losses = {}
    for model_name in ("uvit-l2", "uvit-l2-released"):
        schedule = _schedule(model_name)
        torch.manual_seed(0)
        losses[model_name] = diffusion_loss(_oracle_model(schedule, X0), features, build_noise_scheduler(SimpleNamespace(noise_schedule=schedule))).item()
    assert losses["uvit-l2"] < 1e-6 and losses["uvit-l2-released"] > 0.05, losses
    model = _oracle_model(_schedule("uvit-l2"), X0)
    model.predict(X0.float().expand(3, -1, -1, -1), torch.tensor([0, 499, 999]), None)
    torch.testing.assert_close(model.backbone.seen[-1], torch.tensor([0.999, 499.5, 999.0]))  # t_n · 999 with t_n = (n + 1) / 1000


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "pndm"])
def test_samplers_run_on_the_vp_schedule(sampler):
    """DDIM / DPM-Solver++ / PNDM over the VP ᾱ with the exact predictor follow the analytic trajectory: the initial
    noise direction is kept, so they end at sqrt(ᾱ_0)·x0 + sqrt(1 − ᾱ_0)·ε_T (DPM-Solver++: at x0 itself).
    Feeding the backbone the bare step index instead of t·999 (the SD convention) misses by > 1e-3."""
    from cxr_irgen.vision.pipeline import build_sampler, denoise
    from cxr_irgen.vision.schedules import BackboneTime

    schedule = _schedule("uvit-l2")
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1)).double()
    errors = {}
    for time_input in ("vp", "step index"):
        model = _oracle_model(schedule, X0)
        if time_input == "step index":
            model.backbone_time = BackboneTime({"kind": "sd_scaled_linear", "num_train_timesteps": 1000})
        steps = build_sampler(sampler, schedule)
        latents = denoise(model, torch.zeros(2, 1, 4), noise.float(), steps, steps=25, guidance=1.0).double()
        alpha_bar = steps.alphas_cumprod.double()
        first, last = alpha_bar[int(steps.timesteps[0])], alpha_bar[0]
        eps = (noise - first.sqrt() * X0) / (1 - first).sqrt()
        expected = X0 if sampler == "dpm++" else last.sqrt() * X0 + (1 - last).sqrt() * eps
        errors[time_input] = float((latents - expected).abs().max())
    assert errors["vp"] < 1e-4 and errors["step index"] > 1e-3, errors


@pytest.mark.parametrize("output", ["sample", "v_prediction"])
def test_clean_latent_and_velocity_predictions_train_and_sample_as_the_noise_prediction(output):
    """``prediction_type=sample`` / ``v_prediction``: the exact predictor of that output has zero training loss (the exact
    noise predictor does not), and every sampler (PNDM too, which diffusers limits to noise and velocity) given it
    follows the exact noise predictor's trajectory; an unknown prediction type is refused by name."""
    from cxr_irgen.errors import UserError
    from cxr_irgen.vision.model import build_noise_scheduler
    from cxr_irgen.vision.pipeline import build_sampler, denoise
    from cxr_irgen.vision.train import diffusion_loss

    schedule = {**_schedule("uvit-l2"), "prediction_type": output}
    scheduler = build_noise_scheduler(SimpleNamespace(noise_schedule=schedule))
    features = {"latents": X0.float().expand(64, -1, -1, -1), "text_pooled": torch.zeros(64, 4)}
    losses = {}
    for predictor in (output, "epsilon"):
        torch.manual_seed(0)
        losses[predictor] = diffusion_loss(_oracle_model(schedule, X0, predictor), features, scheduler).item()
    assert losses[output] < 1e-6 and losses["epsilon"] > 0.05, losses
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    for sampler in ("ddim", "dpm++", "pndm"):
        ends = {predictor: denoise(_oracle_model(schedule, X0, predictor), torch.zeros(2, 1, 4), noise, build_sampler(sampler, schedule),
                                   steps=25, guidance=1.0, prediction_type=predictor) for predictor in (output, "epsilon")}
        torch.testing.assert_close(ends[output], ends["epsilon"], atol=1e-4, rtol=1e-4)
    with pytest.raises(UserError, match="prediction_type='x0'"):
        build_sampler("ddim", {**schedule, "prediction_type": "x0"})


def test_released_presets_reproduce_the_release_and_the_fixed_one_is_named_for_what_it_is():
    from cxr_irgen.vision.conditioning import guidance_warning
    from cxr_irgen.vision.model import vision_model_config

    for name in ("unet-sd14-released", "uvit-l2-released"):
        cfg = vision_model_config(name)
        assert cfg.image_encoder.pretrained == "openai/clip-vit-base-patch32" and cfg.image_encoder.normalize == "half"
        assert cfg.conditioning.space == "pooled" and cfg.conditioning.dropout == 0.0 and not cfg.conditioning.project_image
        assert cfg.reference.exclude == "none" and cfg.vae.sample and cfg.noise_schedule.kind == "sd_scaled_linear"
        assert "never trained" in guidance_warning(cfg.conditioning.dropout, 7.5) and guidance_warning(cfg.conditioning.dropout, 1.0) is None
    fixed = vision_model_config("unet-sd14-b32-pooled")
    assert fixed.image_encoder.normalize == "clip" and fixed.conditioning.dropout == 0.1 and fixed.reference.exclude == "study"
    assert guidance_warning(fixed.conditioning.dropout, 7.5) is None


@pytest.mark.parametrize("space, text_key, image_output", [("projected", "text_embeds", "projected"), ("pooled", "text_pooled", "pooled"), ("mixed", "text_pooled", "projected")])
def test_conditioning_spaces_pick_the_clip_outputs_they_name(space, text_key, image_output):
    """projected: CLIP's projected text and image embeddings (one space); pooled: both pooler outputs (the release)."""
    from cxr_irgen.vision.model import build_encoders, build_trainable, vision_model_config

    cfg = vision_model_config("uvit-tiny", [f"conditioning.space={space}"])
    encoders = build_encoders(cfg)
    model = build_trainable(cfg, encoders)
    assert model.conditioning.text_key == text_key and encoders.image_encoder.output == image_output
    features = encoders.encode_conditions(["A chest X-Ray image with edema"], torch.rand(1, 1, 32, 32))
    text_model = encoders.text_encoder.model
    with torch.no_grad():
        tower = text_model.text_model if space == "projected" else text_model
        pooled = tower(encoders.text_encoder.tokenize(["A chest X-Ray image with edema"])).pooler_output
        expected_text = text_model.text_projection(pooled) if space == "projected" else pooled
        vision = encoders.image_encoder.model(pixel_values=encoders.image_encoder.normalize(torch.rand(1, 1, 32, 32)))
    torch.testing.assert_close(features[text_key], expected_text)
    assert features["image_embeds"].shape[-1] == (vision.image_embeds if image_output == "projected" else vision.pooler_output).shape[-1]
    token = model.conditioning.tokens(features)
    assert token.shape == (1, 1, 32)


def _text_cfg(directory):
    from omegaconf import OmegaConf

    return OmegaConf.create({"pretrained": str(directory), "tokenizer": "openclip"})


def test_projected_text_encoder_loads_clips_projection_and_refuses_a_checkpoint_without_it(tmp_path):
    """uvit-l2's text encoder: the text tower and projection of a CLIP repository; SD's text_encoder/ has no projection."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel

    from cxr_irgen.errors import UserError
    from cxr_irgen.vision.encoders import build_text_encoder

    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=49408, max_position_embeddings=77, projection_dim=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    encoder = build_text_encoder(_text_cfg(tmp_path / "clip"), projected=True)
    torch.testing.assert_close(encoder.model.text_projection.weight, clip.text_projection.weight)
    with torch.no_grad():
        pooled = clip.text_model(encoder.tokenize(["A chest X-Ray image with edema"])).pooler_output
        torch.testing.assert_close(encoder(["A chest X-Ray image with edema"])["text_embeds"], clip.text_projection(pooled))
    plain_tower = build_text_encoder(_text_cfg(tmp_path / "clip"))
    with torch.no_grad():  # uvit-l2 with conditioning.mode=text reads the same tower without the projection
        torch.testing.assert_close(plain_tower(["A chest X-Ray image with edema"])["text_pooled"], pooled)
    CLIPTextModel(clip.config.text_config).save_pretrained(tmp_path / "sd_text_encoder")
    with pytest.raises(UserError, match="has no CLIP text projection"):
        build_text_encoder(_text_cfg(tmp_path / "sd_text_encoder"), projected=True)
