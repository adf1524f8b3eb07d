"""Privacy: float nearest distances (not CheXGenBench's uint8 wrap-around), the stated thresholds, the closest-pairs
sheet, and evaluate's privacy table on phantoms with one planted copy of a training image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_copies import phantoms_with_a_copy
from PIL import Image

from cxr_irgen.cli import run_command
from cxr_irgen.eval.privacy import nearest_rms, privacy_metrics, privacy_table, save_privacy_sheet


def test_pixel_distance_is_float_not_uint8_wrap_around():
    """Generated gray 10; training 250 and 60. True nearest: 60 (RMS 50/255). uint8 subtraction wraps: 10 − 250 = 16 and
    10 − 60 = 206, so CheXGenBench's ``np.linalg.norm(arr1 - arr2) / sqrt(size)`` calls 250 the nearer, at 16."""
    generated = np.full((1, 1, 8, 8), 10, np.uint8)
    training = np.stack([np.full((1, 8, 8), 250, np.uint8), np.full((1, 8, 8), 60, np.uint8)])
    index, distance = nearest_rms(torch.from_numpy(generated / 255.0), torch.from_numpy(training / 255.0))
    assert index.tolist() == [1] and distance[0] == pytest.approx(50 / 255, rel=1e-12)
    wrapped = [np.linalg.norm(generated[0] - t) / np.sqrt(t.size) for t in training]  # uint8 arithmetic, as CheXGenBench does
    assert wrapped == [16.0, 206.0] and int(np.argmin(wrapped)) != index[0] and wrapped[0] / 255 != pytest.approx(distance[0])


def test_nearest_equals_brute_force_and_excludes_self():
    rng = np.random.default_rng(0)
    queries, candidates = rng.random((7, 1, 5, 5)), rng.random((9, 1, 5, 5))
    brute = np.sqrt(((queries.reshape(7, 1, -1) - candidates.reshape(1, 9, -1)) ** 2).mean(-1))
    index, distance = nearest_rms(torch.from_numpy(queries), torch.from_numpy(candidates), chunk=3)
    assert index.tolist() == brute.argmin(1).tolist() and distance == pytest.approx(brute.min(1), rel=1e-9)
    own = np.sqrt(((candidates.reshape(9, 1, -1) - candidates.reshape(1, 9, -1)) ** 2).mean(-1)) + np.diag(np.full(9, np.inf))
    index, distance = nearest_rms(candidates, candidates, exclude_self=True, chunk=4)
    assert index.tolist() == own.argmin(1).tolist() and distance == pytest.approx(own.min(1), rel=1e-9)
    with pytest.raises(ValueError, match=r"\(N, P\) and \(M, P\)"):
        nearest_rms(queries, rng.random((3, 1, 4, 4)))


def test_only_the_planted_copy_is_under_both_thresholds(tmp_path):
    rng = np.random.default_rng(1)
    training, generated = torch.from_numpy(rng.random((12, 1, 16, 16))), torch.from_numpy(rng.random((5, 1, 16, 16)))
    generated[2] = training[7] + 0.001  # a near copy
    features_t = rng.normal(size=(12, 64))
    features_g = np.r_[rng.normal(size=(2, 64)), features_t[7:8] + 1e-4, rng.normal(size=(2, 64))]
    names_g, names_t = [f"g{i}" for i in range(5)], [f"t{i}" for i in range(12)]
    out = privacy_metrics(generated, training, features_g, features_t, names_g, names_t, pixel_threshold=0.05, top=2)
    assert out["pixel_rms"]["n_below"] == 1 and out["pixel_rms"]["share_below"] == pytest.approx(0.2)
    assert out["pixel_rms"]["quantiles"]["q0"] == pytest.approx(0.001, rel=1e-6) and out["pixel_rms"]["quantiles"]["q50"] > 0.3
    own = nearest_rms(features_t, features_t, exclude_self=True)[1]
    assert out["feature_distance"]["threshold"] == pytest.approx(np.quantile(own, 0.05)) and out["feature_distance"]["n_below"] == 1
    assert out["closest_pairs"][0] == {"generated": "g2", "training": "t7", "pixel_rms": pytest.approx(0.001, rel=1e-6),
                                       "nearest_by_features": "t7", "feature_distance": pytest.approx(1e-4, rel=1e-3)}
    given = privacy_metrics(generated, training, features_g, features_t, names_g, names_t, feature_threshold=10.0)
    assert given["feature_distance"]["threshold_rule"] == "given" and given["feature_distance"]["n_below"] == 5
    table = privacy_table({**out, "feature_extractor": "toy"})
    assert "| pixel RMS, gray [0, 1], 16 px | 0.001 |" in table and "0.2000 (1)" in table and "features (toy)" in table
    for i, image in enumerate((*generated[:3], training[7])):
        Image.fromarray((image[0].numpy().clip(0, 1) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    pairs = [{"generated": str(tmp_path / f"{i}.png"), "training": str(tmp_path / "3.png"), "pixel_rms": 0.1, "feature_distance": 0.2} for i in range(3)]
    sheet = Image.open(save_privacy_sheet(pairs, tmp_path / "sheet.png", size=32))
    assert sheet.size == (64, 3 * (32 + 14))
    pixels = np.asarray(sheet)
    halves = lambda row: np.abs(pixels[row * 46:row * 46 + 32, :32].astype(int) - pixels[row * 46:row * 46 + 32, 32:64]).mean()
    assert halves(0) > 40 and halves(2) < 2  # generated | training side by side: a random image, then the near copy


def test_evaluate_privacy_table_on_phantoms(tmp_path):
    """8 validate phantoms + 1 exact copy of a training image: only the copy is under the pixel threshold."""
    root, gen, features, copied, table = phantoms_with_a_copy(tmp_path)
    run_command("evaluate", [f"generated={gen}", f"data.root={root}", "eval.real.views=[PA,AP]", "eval.real.n=12", "eval.metrics=[privacy]",
                             "eval.privacy.n_train=null", "eval.privacy.resolution=48", "eval.privacy.top=3",
                             "eval.fid.features=classifier", f"eval.fid.classifier={features}", f"hydra.run.dir={tmp_path / 'ev'}"])
    privacy = json.loads((tmp_path / "ev" / "metrics.json").read_text())["privacy"]
    assert privacy["n_training"] == int((table["split"] == "train").sum()) and privacy["n_generated"] == 9
    assert privacy["pixel_rms"]["n_below"] == 1 and privacy["closest_pairs"][0]["generated"].endswith("copy.jpg")
    assert privacy["closest_pairs"][0]["training"].endswith(copied.split("/")[-1]) and privacy["closest_pairs"][0]["pixel_rms"] < 0.01
    assert privacy["feature_distance"]["n_below"] >= 1 and privacy["closest_pairs"][0]["feature_distance"] < 1e-4
    assert (tmp_path / "ev" / "privacy_pairs.png").is_file()
    tables = (tmp_path / "ev" / "tables.md").read_text()
    assert "### Privacy: each of 9 generated images vs its nearest of" in tables and f"{1 / 9:.4f} (1)" in tables
