"""Memorisation flags a planted copy of a training image, in pixel space (SSIM) and feature space, through evaluate too;
KID and PRDC come out of evaluate from the same features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_copies import phantoms_with_a_copy
from eval_threads import one_thread  # noqa: F401  (fixture)

from cxr_irgen.cli import run_command
from cxr_irgen.eval.memorisation import nearest_by_cosine, nearest_by_ssim, nearest_training_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth(seed: int, n: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 5, 1, 2)


def test_nearest_neighbours_match_brute_force():
    from cxr_irgen.eval.image_metrics import ssim

    generated, training = _smooth(0, 3), _smooth(1, 5)
    index, value = nearest_by_ssim(generated, training, chunk=2)
    for i in range(3):
        scores = [ssim(generated[i:i + 1], training[j:j + 1]).item() for j in range(5)]
        assert index[i] == int(np.argmax(scores)) and value[i] == pytest.approx(max(scores), rel=1e-12)
    features = np.array([[1.0, 0.0], [0.0, 2.0]])
    index, value = nearest_by_cosine(features, np.array([[0.0, 5.0], [3.0, 0.1]]))
    assert index.tolist() == [1, 0] and value[1] == pytest.approx(1.0)


def test_a_planted_copy_is_flagged_and_tops_the_pairs():
    training = _smooth(2, 12)
    generated = torch.cat([_smooth(3, 6), training[7:8]])  # the last generated image copies training image 7
    flat = lambda x: x.flatten(1).double().numpy() - 0.5
    out = nearest_training_images(flat(generated), flat(training), generated, training, [f"g{i}" for i in range(7)], [f"t{j}" for j in range(12)],
                       cosine_threshold=0.95, ssim_threshold=0.9, top=3)
    assert out["flagged"] == ["g6"] and out["ssim"]["n_above"] == 1 and out["feature_cosine"]["n_above"] == 1
    assert out["top_pairs"][0] == {"generated": "g6", "training": "t7", "ssim": pytest.approx(1.0), "nearest_by_features": "t7",
                                   "feature_cosine": pytest.approx(1.0)}
    assert out["ssim"]["quantiles"]["q50"] < 0.9 and out["ssim"]["share_above"] == pytest.approx(1 / 7)


def test_evaluate_memorisation_kid_prdc_on_phantoms(tmp_path):
    """A phantom set; generated = 8 validate images + 1 exact copy of a training image: only the copy is flagged."""
    root, gen, features, copied, table = phantoms_with_a_copy(tmp_path)
    run_command("evaluate", [f"generated={gen}", f"data.root={root}", "eval.real.views=[PA,AP]", "eval.real.n=12",
                             "eval.metrics=[fid,kid,prdc,memorisation]", "eval.kid.subsets=10", "eval.prdc.k=3", "eval.memorisation.n_train=null",
                             "eval.memorisation.ssim_resolution=48",
                             "eval.fid.features=classifier", f"eval.fid.classifier={features}", f"hydra.run.dir={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    mem = metrics["memorisation"]
    assert [p.split("/")[-1] for p in mem["flagged"]] == ["copy.jpg"] and mem["top_pairs"][0]["training"].endswith(copied.split("/")[-1])
    assert mem["top_pairs"][0]["ssim"] == pytest.approx(1.0, abs=1e-6) and mem["n_training"] == int((table["split"] == "train").sum())
    assert metrics["kid"]["subset_size"] == min(9, metrics["real"]["n_selected"]) == metrics["fid"]["n_real"] and metrics["kid"]["subsets"] == 10 and np.isfinite(metrics["kid"]["mean"])
    assert metrics["prdc"]["k"] == 3 and 0 <= metrics["prdc"]["precision"] <= 1 and metrics["fid"]["feature_extractor"] == metrics["kid"]["feature_extractor"]
    assert (tmp_path / "ev" / "memorisation_pairs.png").is_file()
    tables = (tmp_path / "ev" / "tables.md").read_text()  # table 6: the same numbers, with N beside them
    assert f"| {metrics['kid']['mean']:.4f} | {metrics['kid']['std']:.4f} | {metrics['prdc']['precision']:.4f} |" in tables
    assert f"| {1 / 9:.4f} (1) |" in tables and f"N gen=9 vs N train={mem['n_training']}" in tables
