"""Downstream utility end to end on a reduced phantom set: classifiers trained on real, synthetic and real+synthetic
images, scored on the real held-out split, one table; the bootstrap AUROC agrees with sklearn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_threads import one_thread  # noqa: F401  (fixture)

from cxr_irgen.cli import run_command
from cxr_irgen.eval.utility import bootstrap_auroc, rank_auroc

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bootstrap_auroc_point_values_match_sklearn_and_leave_uncertain_out():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = np.full((60, 14), np.nan, np.float32)
    labels[:, 2] = rng.integers(0, 2, 60)
    labels[:5, 2] = -1.0
    labels[:, 5] = 0.0  # no positive: not scored
    scores = rng.normal(size=(60, 14)) + labels.clip(0, 1) * 1.5
    out = bootstrap_auroc(labels, np.nan_to_num(scores), n_bootstrap=200, seed=1)
    keep = labels[:, 2] != -1
    expected = roc_auc_score(labels[keep, 2] == 1, np.nan_to_num(scores)[keep, 2])
    assert list(out["per_class"]) == ["Cardiomegaly"] and out["per_class"]["Cardiomegaly"]["auroc"] == pytest.approx(expected)
    low, high = out["per_class"]["Cardiomegaly"]["ci95"]
    assert low < expected < high and out["mean"]["auroc"] == pytest.approx(expected)
    tied = np.round(scores[:, 2], 1)  # ties count one half, as in sklearn
    assert rank_auroc(labels[:, 2] == 1, tied) == pytest.approx(roc_auc_score(labels[:, 2] == 1, tied), rel=1e-12)


def _synthetic_folder(root, out):
    """A second phantom set (another seed) stands in for a generator: its training images with their label vectors as sidecars."""
    from PIL import Image

    from cxr_irgen.data.labels import format_labels, labels_from_row
    from cxr_irgen.data.mimic import load_index

    table = load_index(root)
    out.mkdir()
    rows = table[(table["split"] == "train") & table["view"].isin(["PA", "AP"])].to_dict("records")
    for i, row in enumerate(rows):
        Image.open(row["image_path"]).convert("L").save(out / f"{i:04d}.png")
        (out / f"{i:04d}.json").write_text(json.dumps({"labels": format_labels(labels_from_row(row))}))
    return len(rows)


UTILITY = ["eval.utility.test_split=validate", "eval.utility.resolution=48", "eval.utility.n_bootstrap=50",
           "eval.utility.classifier.growth_rate=8", "eval.utility.classifier.block_config=[2,2,2]",
           "eval.utility.classifier.num_init_features=16", "eval.utility.trainer.max_steps=80", "eval.utility.trainer.batch_size=16"]


@pytest.mark.slow
def test_utility_end_to_end_on_phantoms(tmp_path):
    """Real phantoms (seed 0) as the data; a second phantom set (seed 1) as the "generator". Control: the same synthetic
    images with their label rows shuffled must train a clearly worse classifier than with their own labels."""
    from hydra import compose, initialize_config_module

    from cxr_irgen.data.labels import CHEXPERT_LABELS
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.phantoms import make_phantoms
    from cxr_irgen.eval.utility import bootstrap_auroc, score_images, train_classifier

    real = make_phantoms(tmp_path / "real", n=240, seed=0, size=48)
    other = make_phantoms(tmp_path / "other", n=120, seed=1, size=48)
    n_synthetic = _synthetic_folder(other, tmp_path / "synthetic")
    run_command("evaluate", [f"generated={tmp_path / 'synthetic'}", f"data.root={real}", "eval.metrics=[utility]", "eval.utility.ratios=[1.0]",
                             *UTILITY, f"hydra.run.dir={tmp_path / 'ev'}"])
    result = json.loads((tmp_path / "ev" / "metrics.json").read_text())["utility"]
    rows = {row["training_set"]: row for row in result["rows"]}
    assert list(rows) == ["real", "synthetic", "real+synthetic@1"]
    n_real = rows["real"]["n_real"]
    assert rows["synthetic"]["n_synthetic"] == n_synthetic and rows["real+synthetic@1"]["n_synthetic"] == n_real
    for row in rows.values():
        for entry in [*row["per_class"].values(), row["mean"]]:
            assert entry["ci95"][0] <= entry["auroc"] <= entry["ci95"][1]
    table = (tmp_path / "ev" / "utility.md").read_text()
    assert "| real+synthetic@1 |" in table and "95% bootstrap CI" in table

    with initialize_config_module("cxr_irgen.configs", version_base="1.3"):
        util = compose("evaluate", overrides=UTILITY).eval.utility
    index = load_index(other)
    synthetic = index[(index["split"] == "train") & index["view"].isin(["PA", "AP"])].reset_index(drop=True)
    labels = synthetic[list(CHEXPERT_LABELS)].to_numpy()
    shuffled = synthetic.copy()
    shuffled[list(CHEXPERT_LABELS)] = labels[np.random.default_rng(0).permutation(len(labels))]
    test = load_index(real)
    test = test[(test["split"] == "validate") & test["view"].isin(["PA", "AP"])].reset_index(drop=True)
    control = bootstrap_auroc(test[list(CHEXPERT_LABELS)].to_numpy(np.float32),
                              score_images(train_classifier(shuffled, util, 1234, tmp_path / "shuffled"), test["image_path"].tolist()), 10, 0)
    print({**{name: round(row["mean"]["auroc"], 3) for name, row in rows.items()}, "synthetic, shuffled labels": round(control["mean"]["auroc"], 3)})
    assert rows["synthetic"]["mean"]["auroc"] > control["mean"]["auroc"] + 0.1
    assert rows["real"]["mean"]["auroc"] > control["mean"]["auroc"] + 0.1


REPORT_UTILITY = ["eval.report_utility.encoder=dve-tiny", "+eval.report_utility.encoder_args.image_size=32", "eval.report_utility.decoder=transformer-tiny",
                  "eval.report_utility.trainer.max_steps=8", "eval.report_utility.trainer.batch_size=8", "eval.report_utility.trainer.lr=1e-3",
                  "eval.report_utility.max_test=10", "eval.report_utility.n_bootstrap=20", "eval.report_utility.decoding.num_beams=1",
                  "eval.report_utility.decoding.max_length=30"]


def test_report_utility_end_to_end_on_phantoms(phantom_root, tmp_path):
    """The session's phantoms as the real data; their validate images with their own findings stand in for generated pairs
    (pairs.jsonl). One report generator per training set and the controls, each scored on real test images; tables.md shows it."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_sections
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.eval.report_utility import MOST_FREQUENT, SHUFFLED

    table = load_index(phantom_root)
    data_cfg = OmegaConf.create({"name": "phantom", "root": str(phantom_root), "cache_dir": None})
    sections = load_sections(table, data_cfg).set_index("study_id")["findings"]
    stand_in = table[(table["split"] == "validate") & table["view"].isin(["PA", "AP"]) & (table["study_id"].map(sections).fillna("") != "")]
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "pairs.jsonl").write_text("".join(json.dumps({"image": p, "labels": None, "report": sections[s]}) + "\n"
                                             for p, s in zip(stand_in["image_path"], stand_in["study_id"])))
    run_command("evaluate", [f"generated={gen}", f"data.root={phantom_root}", "eval.metrics=[report_utility]", *REPORT_UTILITY,
                             f"hydra.run.dir={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    result = metrics["report_utility"]
    rows = {row["training_set"]: row for row in result["rows"]}
    assert list(rows) == [MOST_FREQUENT, "real", "synthetic", "real+synthetic@1", SHUFFLED]
    n_real = rows["real"]["n_real"]
    assert n_real > 0 and rows["synthetic"]["n_synthetic"] == len(stand_in) == rows[SHUFFLED]["n_synthetic"]
    assert rows["real+synthetic@1"]["n_real"] == n_real and rows["real+synthetic@1"]["n_synthetic"] == n_real
    assert result["n_test"] == 10 and result["steps"] == 8 and result["labeler"] == "rules"
    for row in rows.values():
        f1 = row["chexpert_f1"]["positive_only"]["micro_14"]
        assert f1["ci95"][0] <= f1["value"] <= f1["ci95"][1] and 0 <= row["text"]["bleu1"] <= 1 and row["chexpert_f1"]["n_reports"] == 10
    assert rows[MOST_FREQUENT]["distinct_reports"] == 1
    tables = (tmp_path / "ev" / "tables.md").read_text()
    assert "Table 8: downstream utility (reports)" in tables and f"| real+synthetic@1 | {n_real} | {n_real} |" in tables
    assert "| skipped: not in eval.metrics | skipped: not in eval.metrics |" in tables and (tmp_path / "ev" / "report_utility.md").is_file()
