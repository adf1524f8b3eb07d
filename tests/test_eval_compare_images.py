"""compare-images: sets scored against the same real images; a planted difference (noise) is significant, a null one
(the same images again) is not; the printed p-values are the paired bootstrap of the saved features.

The feature extractor and classifier are tiny random DenseNets saved as a train-classifier run: the test checks the
protocol, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_helpers import refused
from PIL import Image

from cxr_irgen.data.labels import format_labels, labels_from_row


@pytest.fixture(scope="module")
def sets(phantom_root, tmp_path_factory):
    """Three folders with label sidecars: validate-split phantoms, the same phantoms again, and noise with the same labels."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.eval.classifier import Classifier, build_densenet

    root = tmp_path_factory.mktemp("compare-images")
    table = load_index(phantom_root)
    chosen = table[(table["split"] != "test") & table["view"].isin(["PA", "AP"])].head(24)
    rng = np.random.default_rng(0)
    for name in ("phantoms", "again", "noise"):
        (root / name).mkdir()
        for i, row in enumerate(chosen.to_dict("records")):
            image = Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)) if name == "noise" else Image.open(row["image_path"]).convert("L")
            image.save(root / name / f"{i:04d}.png")
            (root / name / f"{i:04d}.json").write_text(json.dumps({"labels": format_labels(labels_from_row(row))}))
    torch.manual_seed(0)
    arch = {"growth_rate": 8, "block_config": [2, 2], "num_init_features": 8}
    Classifier(build_densenet(arch, 14), ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                                          "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                                          "Fracture", "Support Devices"], 64, "tiny", arch).save_pretrained(root / "classifier")
    return root


@pytest.mark.slow
def test_noise_differs_significantly_and_the_same_images_do_not(phantom_root, sets, tmp_path):
    from cxr_irgen.eval.image_metrics import fid_from_features
    from cxr_irgen.eval.significance import paired_bootstrap

    proc = subprocess.run([sys.executable, "-m", "cxr_irgen.cli", "compare-images", f"data.root={phantom_root}",
                           f"generated=[{sets / 'phantoms'},{sets / 'again'},{{path: {sets / 'noise'}, name: N}}]", "metrics=[fid,kid,auroc]",
                           "eval.fid.features=classifier", f"eval.fid.classifier={sets / 'classifier'}", f"eval.auroc.classifier={sets / 'classifier'}",
                           "eval.real.views=[PA,AP]", "eval.real.n=24", "eval.kid.subsets=5", "eval.auroc.pathologies=[Cardiomegaly,Effusion]",
                           "significance.n_resamples=60", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "compare_images.json").read_text())
    assert result["baseline"] == "phantoms" and result["n_resamples"] == 60 and result["test"].startswith("paired bootstrap")
    for metric in ("fid", "kid"):
        again, noise = result["metrics"][metric]["again"], result["metrics"][metric]["N"]
        assert again["difference"] == 0 and again["p_value"] == 1.0 and not again["significant"] and again["paired_items"]
        assert noise["difference"] > 0 and noise["significant"] and noise["ci95"][0] > 0, (metric, noise)
    assert result["metrics"]["auroc"]["again"]["p_value"] == 1.0
    features = np.load(tmp_path / "features.npz")
    expected = paired_bootstrap(fid_from_features, features["phantoms"], features["N"], features["real"], 60, result["seed"])
    assert result["metrics"]["fid"]["N"]["p_value"] == expected["p_value"] and result["metrics"]["fid"]["N"]["value"] == pytest.approx(expected["b"])
    assert "| N | 24 |" in proc.stdout and "R=60, seed 12345" in proc.stdout and "p=1.0000" in proc.stdout and " *" in proc.stdout.split("\n| N |")[1]
    assert "p<0.0167" in proc.stdout.split("\n| N |")[1]


@pytest.mark.parametrize("overrides,message", [
    (["generated=[/a]"], "at least two sets"),
    (["generated=[/a,/b]", "metrics=[fid,bleu]"], "choose one or more of fid, kid, auroc"),
    (["generated=[/a,/b]", "metrics=[auroc]"], "eval.auroc.classifier"),
])
def test_bad_calls_are_one_line_errors(overrides, message, tmp_path, capsys, monkeypatch):
    line = refused(["compare-images", *overrides, f"hydra.run.dir={tmp_path / 'out'}"], capsys, tmp_path, monkeypatch)
    assert message in line and not (tmp_path / "out").exists()
