"""Every metric refuses bad input with a clear error, or follows a documented rule (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_irgen.data.labels import LABEL_INDEX


@pytest.mark.parametrize("metric", ["psnr", "ssim", "ms_ssim"])
def test_pixel_metrics_refuse_nan_and_0_255_images(metric):
    from cxr_irgen.eval import image_metrics

    fn = getattr(image_metrics, metric)
    good = torch.rand(2, 1, 32, 32)
    assert torch.isfinite(fn(good, good)).all()
    bad = good.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/inf pixel"):
        fn(good, bad)
    with pytest.raises(ValueError, match=r"need \[0, 1\] \(0-255 images: divide by 255\)"):
        fn(good * 255, good)
    with pytest.raises(ValueError, match="same shape"):
        fn(good, good[:1])


def test_feature_extractors_refuse_0_255_images():
    from cxr_irgen.eval.features import XRVFeatures

    with pytest.raises(ValueError, match="divide by 255"):
        XRVFeatures()(torch.rand(1, 1, 32, 32) * 255)


def test_fid_refuses_non_psd_covariances_and_nan_features():
    from cxr_irgen.eval.image_metrics import fid_from_features, frechet_distance

    mu, eye = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(mu, -eye, mu, -eye)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, eye)
    with pytest.raises(ValueError, match="NaN"):
        fid_from_features(np.full((4, 3), np.nan), np.zeros((4, 3)))
    singular = np.diag([1.0, 0.0, 0.0])  # PSD but singular: still a valid covariance
    assert frechet_distance(mu, singular, mu, eye) == pytest.approx(2.0)


def test_text_metrics_refuse_empty_and_mismatched_lists():
    from cxr_irgen.text.text_metrics import bleu, cider_d, rouge_l_coco, rouge_l_stemmed, text_metrics

    with pytest.raises(ValueError, match="no reports to score"):
        text_metrics([], [])
    hyps, refs = [["a", "b"], ["c"]], [[["a", "b"]]]
    for fn in (bleu, rouge_l_coco, cider_d):
        with pytest.raises(ValueError, match="2 generated reports but 1 references"):
            fn(hyps, refs)
    with pytest.raises(ValueError, match="2 generated reports but 1 references"):
        rouge_l_stemmed(["a b", "c"], [["a b"]])
    with pytest.raises(ValueError, match="empty list of references"):
        text_metrics(["a"], [[]])


def test_chexpert_f1_of_no_reports_is_an_error():
    from cxr_irgen.text.chexpert_f1 import chexpert_f1

    with pytest.raises(ValueError, match="0 reports is undefined"):
        chexpert_f1(np.zeros((0, 14)), np.zeros((0, 14)))


def test_no_finding_with_a_positive_finding_is_only_a_positive():
    """Rule (eval/auroc.py): No Finding + a finding → not in the No Finding group; No Finding + Support Devices stays."""
    from cxr_irgen.eval.auroc import no_finding_rows, protocol_groups

    labels = np.full((4, 14), np.nan, np.float32)
    labels[:, LABEL_INDEX["No Finding"]] = 1.0
    labels[1, LABEL_INDEX["Cardiomegaly"]] = 1.0  # contradictory
    labels[2, LABEL_INDEX["Support Devices"]] = 1.0  # allowed with No Finding
    labels[3, LABEL_INDEX["Cardiomegaly"]] = -1.0  # uncertain is not positive
    rows, conflicting = no_finding_rows(labels)
    assert rows.tolist() == [0, 2, 3] and conflicting == 1
    positive, negative = protocol_groups(labels, ["Cardiomegaly"], n=10, seed=0)["Cardiomegaly"]
    assert positive.tolist() == [1] and 1 not in negative.tolist()


def test_report_utility_with_an_unknown_generator_is_a_one_line_error_before_data_loads(tmp_path, capsys):
    from cxr_irgen.cli import main

    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "pairs.jsonl").write_text('{"report": "No effusion."}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", f"generated={tmp_path / 'gen'}", f"data.root={tmp_path / 'absent'}", "eval.metrics=[report_utility]",
                                 "eval.report_utility.encoder=densenet", f"hydra.run.dir={tmp_path / 'ev'}"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("cxr-irgen evaluate: error: eval.report_utility.encoder='densenet': use one of ")
    assert len(err.splitlines()) == 1 and not (tmp_path / "ev").exists()
