"""Vision fidelity (issue 10): the feature cache holds what the model needs, the U-ViT's own noise schedule,
named conditioning spaces and the released presets."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    from cxr_irgen.vision.model import model_config

    assert check_feature_cache(prep / "features", model_config("unet-tiny", ["conditioning.mode=text"]))["contents"] == ["latents", "text_hidden", "text_pooled"]
