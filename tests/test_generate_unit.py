"""generate's pure parts: label sources, pair planning, gallery HTML and label agreement."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_irgen.data.labels import LABEL_INDEX, format_labels
from cxr_irgen.errors import UserError
from cxr_irgen.gallery import label_agreement, write_gallery
from cxr_irgen.generate import plan_pairs, read_label_vectors


def test_labels_from_string_and_csv(tmp_path):
    (vec,) = read_label_vectors("Cardiomegaly=1, pleural effusion=-1", None)
    assert vec[LABEL_INDEX["Cardiomegaly"]] == 1 and vec[LABEL_INDEX["Pleural Effusion"]] == -1
    wide = tmp_path / "wide.csv"
    wide.write_text("Cardiomegaly,Edema\n1,0\n,1\n")
    vecs = read_label_vectors(None, str(wide))
    assert len(vecs) == 2 and vecs[0][LABEL_INDEX["Edema"]] == 0 and np.isnan(vecs[1][LABEL_INDEX["Cardiomegaly"]])
    strings = tmp_path / "strings.csv"
    strings.write_text('labels\n"Edema=1, Fracture=0"\n')
    assert format_labels(read_label_vectors(None, str(strings))[0]) == "Edema=1, Fracture=0"


@pytest.mark.parametrize(
    "labels,labels_file,match",
    [(None, None, "exactly one"), ("Cardiomegaly=2", None, "bad value"), ("Heartache=1", None, "unknown label"), (None, "/nope.csv", "no such file")],
)
def test_bad_label_input_is_one_line(labels, labels_file, match):
    with pytest.raises(UserError, match=match):
        read_label_vectors(labels, labels_file)


def test_csv_without_label_columns_is_rejected(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="CheXpert columns"):
        read_label_vectors(None, str(bad))


def test_plan_gives_each_pair_its_own_seed():
    plan = plan_pairs([np.zeros(14), np.ones(14)], n=3, seed=100)
    assert [p["index"] for p in plan] == list(range(6))
    assert [p["seed"] for p in plan] == list(range(100, 106))
    assert (plan[3]["labels"] == 1).all()


def test_gallery_and_agreement(tmp_path):
    assert label_agreement("Cardiomegaly=1, Edema=0", "Cardiomegaly=1") == (2, 2)
    assert label_agreement("Cardiomegaly=1, Edema=0", "Edema=1") == (0, 2)
    rows = [{"image": "pairs/0000.png", "labels": "Cardiomegaly=1", "prompt": "A chest X-Ray image with cardiomegaly",
             "report": "Heart <b>enlarged</b>.", "report_labels": "Cardiomegaly=1"}]
    html = write_gallery(rows, tmp_path / "index.html").read_text()
    assert 'src="pairs/0000.png"' in html and "agree 1/1" in html and "&lt;b&gt;" in html


def test_sampled_reports_are_drawn_from_each_pairs_seed_whatever_the_batch():
    """Nucleus sampling reads the global RNG: each report is drawn from its own seed, so batches of 1 and of 3 agree
    and the caller's RNG is left as it was; beam/greedy decoding keeps one batched call."""
    import torch
    from omegaconf import OmegaConf

    from cxr_irgen.eval.report_guards import TrainingReportIndex
    from cxr_irgen.generate import _reports
    from cxr_irgen.pipeline import REDRAW_STRIDE, redraw_top_p

    calls = []

    def generator(images, batch_size, **options):
        calls.append(len(images))
        return [f"{torch.rand(1).item():.6f}" for _ in images]

    cfg = OmegaConf.create({"batch_size": 3, "language": {"do_sample": True, "num_beams": 1, "top_p": 0.9, "max_length": 8}})
    images = torch.zeros(3, 1, 4, 4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    together, drawn = _reports(generator, images, cfg, [7, 8, 9])
    assert torch.equal(torch.get_rng_state(), before) and drawn == [{"seed": 7}, {"seed": 8}, {"seed": 9}]
    alone = [_reports(generator, images[i:i + 1], cfg, [seed])[0][0] for i, seed in enumerate([7, 8, 9])]
    assert together == alone and len(set(together)) == 3
    cfg.language.copy_retries = 5
    redrawn, drawn = _reports(generator, images, cfg, [7, 8, 9], TrainingReportIndex([together[0]]))  # the first one "copies"
    assert drawn == [{"seed": 7 + REDRAW_STRIDE, "top_p": redraw_top_p(0.9, 1, 5)}, {"seed": 8, "top_p": 0.9}, {"seed": 9, "top_p": 0.9}]
    assert redrawn[1:] == together[1:] and redrawn[0] != together[0] and redraw_top_p(0.9, 5, 5) == 1.0
    assert redrawn[0] == _reports(generator, images[:1], cfg, [7 + REDRAW_STRIDE])[0][0]
    cfg.language.do_sample = False
    calls.clear()
    _reports(generator, images, cfg, [7, 8, 9])
    assert calls == [3]
