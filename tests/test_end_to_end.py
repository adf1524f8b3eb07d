"""A reduced `cxr-irgen demo` end to end on CPU: files, gallery references, headless-browser rendering."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cxr_irgen.cli import run_command

TINY_LANGUAGE = ("language/model=bart-tiny", "language/prior=vit-tiny", "trainer=cpu-tiny", "trainer.batch_size=8")


def _list(key: str, *items: str) -> str:
    """A Hydra override setting ``key`` to a list of quoted strings."""
    return f"{key}=[" + ",".join(f"'{item}'" for item in items) + "]"


REDUCED = [
    "phantoms.n=240",
    "phantoms.size=64",
    _list("vision.overrides", "vision/model=unet-tiny", "trainer=cpu-tiny", "trainer.max_steps=20", "trainer.batch_size=8", "sample_every=0"),
    _list("language.autoencoder_overrides", "stage=autoencoder", *TINY_LANGUAGE, "trainer.max_steps=100", "trainer.lr=3e-3"),  # writes words, not just </s>
    _list("language.prior_overrides", "stage=prior", *TINY_LANGUAGE, "trainer.max_steps=20"),
    _list("classifier.overrides", "trainer=cpu-tiny", "trainer.max_steps=10", "trainer.batch_size=8", "resolution=64",
          "classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16"),
    "generate.max_label_sets=3",
    "generate.n=2",
    _list("generate.overrides", "vision.scheduler=ddim", "vision.steps=4", "batch_size=4"),
    "reports.max_images=5",
    _list("reports.evaluate_overrides", "eval.metrics=[text,chexpert_f1,guards]", "eval.chexpert_f1.n_bootstrap=20"),
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_command("demo", [*REDUCED, f"hydra.run.dir={out}"])
    return out


@pytest.mark.slow
def test_demo_writes_every_stage(demo_run):
    for stage in ("01-phantoms", "02-vision", "03-language-autoencoder", "04-language-prior", "05-classifier", "06-generate", "07-evaluate", "08-reports", "09-evaluate-reports"):
        assert (demo_run / stage).is_dir(), stage
    metrics = json.loads((demo_run / "07-evaluate" / "metrics.json").read_text())
    assert metrics["fid"]["n_generated"] == 6 and math.isfinite(metrics["fid"]["value"]) and metrics["fid"]["value"] >= 0
    assert 0 < metrics["guards"]["distinct_share"] <= 1
    assert _csv_row(demo_run / "07-evaluate" / "table1.csv")[1] == str(metrics["fid"]["value"])  # the table shows metrics.json
    rows = [json.loads(line) for line in (demo_run / "06-generate" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert all(len(re.findall(r"[a-z]{2,}", row["report"].lower())) >= 2 and row["prompt"].startswith("A chest X-Ray image") for row in rows)  # words, not "...."
    report_rows = [json.loads(line) for line in (demo_run / "08-reports" / "pairs.jsonl").read_text().splitlines()]
    assert len(report_rows) == 5 and all(Path(row["image"]).is_file() for row in report_rows)
    assert all(row["decoding"]["no_repeat_ngram_size"] == 0 and row["decoding"]["num_beams"] >= 1 for row in rows + report_rows)  # full decoding config per sidecar
    text = json.loads((demo_run / "09-evaluate-reports" / "metrics.json").read_text())["text"]
    assert 1 <= text["n_reports"] <= 5 and 0.0 <= text["bleu4"] <= text["bleu1"] <= 1.0 and text["bleu1"] > 0  # scored: the images whose study has the reference section; some words of the references
    assert _csv_row(demo_run / "09-evaluate-reports" / "table3.csv")[1:5] == [str(text[f"bleu{k}"]) for k in range(1, 5)]


def _csv_row(path: Path) -> list[str]:
    """The first data row of a table CSV."""
    import csv

    with open(path, newline="") as fh:
        return list(csv.reader(fh))[1]


@pytest.mark.slow
def test_gallery_references_existing_images(demo_run):
    gallery = demo_run / "06-generate" / "index.html"
    sources = re.findall(r'<img src="([^"]+)"', gallery.read_text())
    assert len(sources) == 6
    assert all((gallery.parent / src).is_file() for src in sources)


@pytest.mark.slow
def test_gallery_renders_in_headless_chromium(demo_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    gallery = demo_run / "06-generate" / "index.html"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--dump-dom", gallery.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    loaded = re.search(r'data-loaded="(\d+)"', body.group(0))
    assert images and loaded, body.group(0)
    assert int(images.group(1)) == 6 and int(loaded.group(1)) == 6
