"""Every number in tables.md and table*.csv is the metrics.json value its column names (each value distinct, so a
cell taken from the wrong key, rounded wrongly or shifted one column fails)."""

from __future__ import annotations

import csv
import itertools
import re

from cxr_irgen.eval.tables import write_tables

PATHOLOGIES = ("Atelectasis", "Cardiomegaly", "Effusion")
F1_KEYS = ("micro_14", "macro_14", "micro_top5", "macro_top5")


def _metrics() -> dict:
    values = (round(0.1 + 0.0137 * k, 4) for k in itertools.count())

    def f1_block():
        return {m: {k: {"value": next(values), "ci95": [next(values), next(values)]} for k in F1_KEYS} for m in ("positive_only", "uncertain_as_positive")}

    per = lambda: {p: {"auroc": next(values), "n_positive": 5, "n_no_finding": 5} for p in PATHOLOGIES}  # noqa: E731
    return {
        "model": "my-model",
        "fid": {"value": 43.4012, "feature_extractor": "xrv features2", "n_generated": 100, "n_real": 90, "resolution": 224},
        "psnr_ssim": {"psnr": 17.25, "ssim": next(values), "n_pairs": 80},
        "diversity": {"ms_ssim_within_label": next(values), "scales": 3},
        "auroc": {"classifier": "xrv", "n": 500, "generated": {"per_pathology": per(), "mean": next(values)}, "real": {"per_pathology": per(), "mean": next(values)}},
        "text": {**{f"bleu{k}": next(values) for k in range(1, 5)}, "rougeL_coco": next(values), "rougeL_f_stem": next(values), "cider_d": next(values),
                 "meteor": next(values), "reference_section": "findings", "n_reports": 12, "tokenizer": "coco"},
        "chexpert_f1": {"labeler": "rules", "n_bootstrap": 50, **f1_block()},
        "guards": {"distinct_share": next(values), "copy_share": next(values), "copy_threshold": "edit similarity >= 0.95"},
        "report_label_agreement": f1_block(),
        "kid": {"mean": next(values), "std": next(values), "subset_size": 90, "subsets": 100, "feature_extractor": "xrv features2", "n_generated": 100, "n_real": 90},
        "prdc": {"precision": next(values), "recall": next(values), "density": next(values), "coverage": next(values), "k": 5,
                 "feature_extractor": "xrv features2", "n_generated": 100, "n_real": 90},
        "memorisation": {"n_generated": 100, "n_training": 1000, "ssim_resolution": 64, "feature_extractor": "xrv features2",
                         "ssim": {"quantiles": {"q100": next(values)}, "threshold": 0.9, "share_above": 0.03, "n_above": 3},
                         "feature_cosine": {"quantiles": {"q100": next(values)}, "threshold": 0.95, "share_above": 0.07, "n_above": 7}},
    }


def _csv(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


def test_table_cells_are_the_metrics_values(tmp_path):
    metrics = {**_metrics(), "inception_score": {"mean": 2.5, "std": 0.1, "splits": 10, "n": 100}}
    write_tables(metrics, tmp_path)
    gen, real, text, f1, guards = (metrics[k] for k in ("auroc", "auroc", "text", "chexpert_f1", "guards"))
    expected = {
        1: [["my-model", 43.4012, 17.25, metrics["psnr_ssim"]["ssim"], metrics["diversity"]["ms_ssim_within_label"], "2.5000 ± 0.1000"]],
        2: [["my-model", *[f"{gen['generated']['per_pathology'][p]['auroc']:.4f} (5+/5−)" for p in PATHOLOGIES], gen["generated"]["mean"]],
            ["real test images", *[f"{real['real']['per_pathology'][p]['auroc']:.4f} (5+/5−)" for p in PATHOLOGIES], real["real"]["mean"]]],
        3: [["my-model", *[text[f"bleu{k}"] for k in range(1, 5)], text["rougeL_coco"], text["rougeL_f_stem"], text["cider_d"], text["meteor"],
             f1["positive_only"]["micro_14"]["value"], f1["uncertain_as_positive"]["micro_14"]["value"], f1["positive_only"]["macro_top5"]["value"]]],
        5: [["my-model", guards["distinct_share"], guards["copy_share"], metrics["report_label_agreement"]["positive_only"]["micro_14"]["value"],
             metrics["report_label_agreement"]["uncertain_as_positive"]["micro_14"]["value"]]],
    }
    kid, prdc, mem = metrics["kid"], metrics["prdc"], metrics["memorisation"]
    expected[6] = [["my-model", kid["mean"], kid["std"], *[prdc[k] for k in ("precision", "recall", "density", "coverage")], "0.0300 (3)",
                    mem["ssim"]["quantiles"]["q100"], "0.0700 (7)"]]
    expected[4] = [["my-model", m, k.split("_")[0], k.split("_")[1], f1[m][k]["value"], f"{f1[m][k]['ci95'][0]:.4f} – {f1[m][k]['ci95'][1]:.4f}"]
                   for m in ("positive_only", "uncertain_as_positive") for k in F1_KEYS]
    markdown = (tmp_path / "tables.md").read_text()
    for number, rows in expected.items():
        header, cells = _csv(tmp_path / f"table{number}.csv")
        assert [len(r) for r in cells] == [len(header)] * len(rows), number
        for row, want in zip(cells, rows):
            assert row == ["—" if v is None else str(v) for v in want], (number, header)
            line = "| " + " | ".join("—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in want) + " |"
            assert line in markdown, (number, line)
    assert "Pneumonia" not in markdown and "xrv features2" in markdown and "N gen=100" in markdown
    assert "KID mean (100 subsets of 90)" in markdown and "precision (k=5)" in markdown and "N train=1000" in markdown and "SSIM > 0.9 at 64 px" in markdown
    numbers = {float(x) for x in re.findall(r"\b\d+\.\d{4}\b", markdown)}
    assert numbers <= {round(v, 4) for v in _flat(metrics)}  # no number that is not in metrics.json


def _flat(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _flat(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _flat(value)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield float(tree)


def test_skipped_metrics_show_their_reason_and_utility_tables_follow(tmp_path):
    """A metric that did not run shows why in its cells; the utility tables are in tables.md with their numbers."""
    metrics = {"model": "m", "skipped": {"kid": "KID needs at least 2 generated and 2 real images", "prdc": "not in eval.metrics",
                                         "memorisation": "not in eval.metrics", "report_utility": "no generated image comes with a generated report"},
               "utility": {"rows": [{"training_set": "real", "n_real": 40, "n_synthetic": 0, "per_class": {"Cardiomegaly": {"auroc": 0.8125, "ci95": [0.7, 0.9]}},
                                     "mean": {"auroc": 0.8125, "ci95": [0.7, 0.9]}}],
                           "n_test": 20, "resolution": 48, "steps": 80, "classifier": "xrv densenet", "n_bootstrap": 50, "seed": 1}}
    write_tables(metrics, tmp_path)
    header, rows = _csv(tmp_path / "table6.csv")
    assert rows == [["m", *["skipped: KID needs at least 2 generated and 2 real images"] * 2, *["skipped: not in eval.metrics"] * 7]]
    markdown = (tmp_path / "tables.md").read_text()
    assert "### Table 7: downstream utility (images)." in markdown and "| real | 40 | 0 | 0.812 [0.700, 0.900] | 0.812 [0.700, 0.900] |" in markdown
    assert "### Table 8: downstream utility (reports).\n\nskipped: no generated image comes with a generated report" in markdown
    assert (tmp_path / "utility.md").is_file() and not (tmp_path / "report_utility.md").exists()
