"""Inception Score: torch-fidelity's definition (10 splits, its seeded shuffle) on the logits of its Inception weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_irgen.errors import UserError
from cxr_irgen.eval.inception_score import InceptionLogits, inception_score


@pytest.mark.parametrize("n, splits, seed", [(100, 10, 2020), (137, 10, 2020), (53, 5, 7), (40, 10, 0)])
def test_equals_torch_fidelity_on_the_same_logits(n, splits, seed):
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.from_numpy(np.random.default_rng(n).normal(scale=3.0, size=(n, 1008)).astype(np.float32))
    ours = inception_score(logits, splits=splits, seed=seed)
    theirs = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    assert abs(ours["mean"] - theirs["inception_score_mean"]) < 1e-6 and abs(ours["std"] - theirs["inception_score_std"]) < 1e-6
    unshuffled = isc_features_to_metric(logits, splits=splits, shuffle=False)
    assert abs(inception_score(logits, splits=splits, seed=None)["mean"] - unshuffled["inception_score_mean"]) < 1e-6


def test_known_values():
    """Identical predictions score 1; confident, distinct classes score the chunk size (10 per split)."""
    assert inception_score(np.zeros((50, 1008)))["mean"] == pytest.approx(1.0)
    confident = np.eye(1008)[:100] * 60.0
    result = inception_score(confident)
    assert result["mean"] == pytest.approx(10.0, rel=1e-6) and result["std"] < 1e-6 and result["n"] == 100 and result["splits"] == 10


def test_too_few_images_and_bad_logits_are_errors():
    with pytest.raises(ValueError, match="needs at least 10 images"):
        inception_score(np.zeros((9, 1008)))
    with pytest.raises(ValueError, match="finite"):
        inception_score(np.full((20, 5), np.nan))


def test_logits_come_from_torch_fidelity_inception_weights(tmp_path, monkeypatch):
    """A random-weight torch-fidelity Inception saved as a .pth gives the same logits_unbiased through InceptionLogits."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.save({}, tmp_path / "empty.pth")
    with monkeypatch.context() as patch:
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        reference = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(tmp_path / "empty.pth"))
    torch.save(reference.state_dict(), tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    images = torch.rand(2, 1, 64, 64)
    logits = InceptionLogits(tmp_path / "weights-inception-2015-12-05-6726825d.pth")(images)
    with torch.no_grad():
        expected = reference((images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1))[0]
    assert logits.shape == (2, 1008)
    torch.testing.assert_close(logits, expected)


def test_nvidia_torchscript_or_no_weights_is_refused():
    with pytest.raises(UserError, match="no classifier layer"):
        InceptionLogits(None)
    with pytest.raises(UserError, match="no classifier layer"):
        InceptionLogits("/x/default_1.pt")
    with pytest.raises(UserError, match="does not exist"):
        InceptionLogits("/x/weights-inception-2015-12-05-6726825d.pth")
