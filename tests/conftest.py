"""Shared fixtures: offline environment, a small phantom dataset, the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real radiographs); tests using it skip when it is absent."""
    if not (SHARED_DATA / "covid-cxr" / "metadata.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom dataset in the MIMIC-CXR-JPG layout (240 images, 64 px), built once per session."""
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms"), n=240, seed=0, size=64)


@pytest.fixture(scope="session")
def report_phantoms(tmp_path_factory) -> Path:
    """1,200 phantoms (64 px) for the tests where report models must learn from images, built once per session."""
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms-reports"), n=1200, seed=0, size=64)


TINY_DENSENET = ["classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16", "resolution=64"]


@pytest.fixture(scope="session")
def held_out_reports(report_phantoms, tmp_path_factory) -> dict:
    """The demo's language module trained once on ``report_phantoms`` (tiny BART on findings, word dropout 0.3, 600 steps;
    tiny ViT priors, 1,500 steps) with two prior inputs: 16 px pixels (``image``) and a 200-step tiny DenseNet's features
    (``classifier``). Returns each prior's reports for the held-out (validate + test) phantoms (3 beams, no 4-gram twice),
    their label rows ``truth`` (N, 14) and the ``most_frequent`` training report."""
    import report_controls

    from cxr_irgen.cli import run_command
    from cxr_irgen.language.generate import LanguageChain

    runs = tmp_path_factory.mktemp("held-out-reports")
    data = [f"data.root={report_phantoms}", "seed=0"]
    language = [*data, "data.image_size=64", "language/model=bart-tiny", "language/prior=vit-tiny", "trainer=cpu-tiny", "trainer.checkpoint_every=100000",
                "evaluation.max_reports=0"]
    run_command("train-classifier", [*data, *TINY_DENSENET, "trainer=cpu-tiny", "trainer.max_steps=200", "trainer.checkpoint_every=100000",
                                     "eval_split=null", f"hydra.run.dir={runs / 'clf'}"])
    run_command("train-language", [*language, "stage=autoencoder", "model.word_dropout=0.3", "trainer.max_steps=600", f"hydra.run.dir={runs / 'ae'}"])
    images, truth, most_frequent = report_controls.heldout(report_phantoms, "findings", one_per_study=True)
    reports = {}
    for name, extra in (("image", []), ("classifier", ["prior.input=classifier", f"prior.classifier.source={runs / 'clf'}"])):
        run_command("train-language", [*language, "stage=prior", f"autoencoder={runs / 'ae'}", *extra, "trainer.max_steps=1500", "trainer.lr=1e-3",
                                       f"hydra.run.dir={runs / name}"])
        reports[name] = LanguageChain.from_run_dir(runs / name)(images, batch_size=64, num_beams=3, no_repeat_ngram_size=4)
    return {"reports": reports, "truth": truth, "most_frequent": most_frequent}
