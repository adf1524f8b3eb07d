"""Two tiny run directories for the Python API tests: a vision run and a language prior run, made by the README's
commands (``cxr-irgen train-vision``, ``train-language stage=autoencoder`` then ``stage=prior``) with tiny overrides."""

from __future__ import annotations

from pathlib import Path

from cxr_irgen.cli import run_command


def tiny_pair_runs(phantom_root: Path, out: Path) -> dict[str, Path]:
    """``{"vision": run dir, "prior": run dir}`` trained for 2 steps each on ``phantom_root`` under ``out``."""
    common = [f"data.root={phantom_root}", "trainer=cpu-tiny", "trainer.max_steps=2", "trainer.batch_size=4"]
    run_command("train-vision", [*common, "vision/model=unet-tiny", "max_images=24", "sample_every=0", f"hydra.run.dir={out / 'vision'}"])
    language = [*common, "language/model=bart-tiny", "trainer.checkpoint_every=2", "evaluation.max_reports=2", "evaluation.max_length=8",
                "data.image_size=64"]
    run_command("train-language", [*language, "stage=autoencoder", f"hydra.run.dir={out / 'autoencoder'}"])
    run_command("train-language", [*language, "stage=prior", f"autoencoder={out / 'autoencoder'}", "language/prior=vit-tiny",
                                   f"hydra.run.dir={out / 'prior'}"])
    return {"vision": out / "vision", "prior": out / "prior"}

