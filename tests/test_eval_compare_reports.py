"""compare-reports: every generator on the same test images, full references, named F1 variants, paper rows on MIMIC only.

The generators here have random weights: the test checks the protocol and the table, not the numbers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.cli import run_command


@pytest.fixture(scope="module")
def saved_generators(tmp_path_factory):
    from cxr_irgen.report_models.configs import report_model_config
    from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model
    from cxr_irgen.report_models.repair import RepairGenerator, RetrievalClip
    from cxr_irgen.report_models.retrieval import CorpusIndex
    from cxr_irgen.report_models.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    vocab = Vocabulary.build(["the heart is enlarged .", "no pleural effusion .", "the lungs are clear ."], min_count=1, max_words=20)
    model = build_report_model("dve-tiny", "transformer-tiny", vocab)
    EncoderDecoderGenerator(model, vocab, {"num_beams": 1, "max_length": 12}).save_pretrained(root / "dve-transformer")
    clip_cfg = OmegaConf.to_container(report_model_config("clip", "vit-tiny"))
    clip_cfg.pop("pretrained")
    clip = RetrievalClip(clip_cfg, int(clip_cfg.pop("image_size")))
    index = CorpusIndex.build(["No acute process.", "Cardiomegaly. Small left effusion.", "Right lower lobe pneumonia."], clip.embed_texts)
    RepairGenerator(clip, index, clip_cfg).save_pretrained(root / "repair")
    return root


@pytest.fixture(scope="module")
def generate_runs(phantom_root, tmp_path_factory):
    """Two tiny `cxr-irgen generate` runs (2 label vectors × 2 images, different seeds) of a 2-step vision run."""
    root = tmp_path_factory.mktemp("generate")
    run_command("train-vision", ["vision/model=unet-tiny", "trainer=cpu-tiny", "trainer.max_steps=2", "trainer.batch_size=4", "max_images=24",
                                 "sample_every=0", f"data.root={phantom_root}", f"hydra.run.dir={root / 'vision'}"])
    (root / "labels.csv").write_text("labels\nCardiomegaly=1\nNo Finding=1\n")
    for name, seed in (("gen-a", 1), ("gen-b", 2)):
        run_command("generate", [f"labels_file={root / 'labels.csv'}", "n=2", f"seed={seed}", f"vision.checkpoint={root / 'vision'}", "mode=images",
                                 "vision.scheduler=ddim", "vision.steps=2", f"hydra.run.dir={root / name}"])
    return root


@pytest.mark.slow
def test_one_table_for_every_generator_on_the_same_images(phantom_root, saved_generators, generate_runs, tmp_path):
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.labels import parse_labels
    from cxr_irgen.text.chexpert_f1 import chexpert_f1
    from cxr_irgen.text.labeler import label_reports

    runs = (f"runs=[{{path: {saved_generators / 'dve-transformer'}, name: DVE+Transformer}},"
            f"{{path: {saved_generators / 'repair'}, name: RePaiR-2, decode: {{k: 2}}, paper: CXR-RePaiR-2}},"
            f"{{path: {saved_generators / 'repair'}, name: RePaiR-Select, decode: {{select: true}}, paper: CXR-RePaiR-Select}}]")
    generated = f"generated=[{generate_runs / 'gen-a'},{{path: {generate_runs / 'gen-b'}, name: B, paper: 5k steps with RIE}}]"
    # In its own process, as users run it (in-process runs once left pytest's capture closed: absl's log handler, which
    # tests/conftest.py now points at the real stderr).
    proc = subprocess.run([sys.executable, "-m", "cxr_irgen.cli", "compare-reports", f"data.root={phantom_root}", runs, generated, "max_images=12",
                           "n_bootstrap=10", "text=findings", "significance.n_resamples=200", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    reports = pd.read_csv(tmp_path / "reports.csv")
    assert list(reports.columns) == ["dicom_id", "study_id", "reference", "DVE+Transformer", "RePaiR-2", "RePaiR-Select"]
    assert len(reports) == 12 and reports["dicom_id"].is_unique
    table = load_table(OmegaConf.create({"name": "phantom", "root": str(phantom_root), "cache_dir": None}))
    sections = load_sections(table, OmegaConf.create({"name": "phantom", "root": str(phantom_root), "cache_dir": None})).set_index("study_id")
    assert reports["reference"].tolist() == sections.loc[reports["study_id"], "findings"].tolist()  # whole sections, never cut
    assert set(table.set_index("dicom_id").loc[reports["dicom_id"], "split"]) == {"test"}

    results = json.loads((tmp_path / "compare.json").read_text())
    assert results["protocol"]["references_truncated"] is False and results["protocol"]["n_images"] == 12
    for row in results["results"]:
        assert set(row["f1_presets"]) == {"miura2021", "endo2021", "r2gen"}
        assert {"positive_only", "uncertain_as_positive"} <= set(row["chexpert_f1"])
        assert "paper_tab3" not in row  # phantoms are not MIMIC-CXR
    markdown = (tmp_path / "compare.md").read_text()
    assert "F1 micro-top5, -1→1 [miura2021]" in markdown and "[endo2021]" in markdown
    assert "paper's Tab. 3" not in markdown.split("\n", 1)[1]
    tab3, tab4 = markdown.split("\n### ")
    assert tab3.count("\n| ") == 4 and tab4.count("\n| ") == 4  # header + 3 measured rows each
    assert "Tab. 4 layout" in tab4 and "| Generator | gen-a (4 images) | B (4 images) |" in tab4 and "paper's Tab. 4" not in tab4.split("\n", 1)[1]

    on_generated = pd.read_csv(tmp_path / "reports_generated.csv", keep_default_na=False)
    assert list(on_generated.columns) == ["set", "image", "labels", "DVE+Transformer", "RePaiR-2", "RePaiR-Select"]
    assert on_generated["set"].tolist() == ["gen-a"] * 4 + ["B"] * 4 and set(on_generated["labels"]) == {"Cardiomegaly=1", "No Finding=1"}
    assert results["protocol"]["generated"][1] == {"name": "B", "path": str(generate_runs / "gen-b"), "n_images": 4, "paper": "5k steps with RIE",
                                                   "reference": "the label vector each image was generated from"}
    for row in results["results"]:  # each cell: the labeler on that generator's reports vs the requested label vectors
        for name in ("gen-a", "B"):
            mine = on_generated[on_generated["set"] == name]
            expected = chexpert_f1(label_reports(mine[row["name"]].tolist()), np.stack([parse_labels(t) for t in mine["labels"]]), n_bootstrap=0)
            assert row["generated"][name]["chexpert_f1"]["positive_only"]["micro_14"]["value"] == pytest.approx(expected["positive_only"]["micro_14"]["value"])
            assert set(row["generated"][name]["f1_presets"]) == {"miura2021", "endo2021", "r2gen"}

    # significance of every generator against the first, recomputed from the saved reports with the same seed
    from cxr_irgen.eval.significance import compare_report_systems

    tests, saved = results["significance"], pd.read_csv(tmp_path / "reports.csv", keep_default_na=False)
    names = ["DVE+Transformer", "RePaiR-2", "RePaiR-Select"]
    expected = compare_report_systems({n: saved[n].tolist() for n in names}, saved["reference"].tolist(),
                                      {n: label_reports(saved[n].tolist()) for n in names}, label_reports(saved["reference"].tolist()),
                                      n_resamples=200, seed=tests["seed"], alpha=0.05)
    assert tests["baseline"] == "DVE+Transformer" and tests["n_resamples"] == 200 and tests["f1_mapping"] == "positive_only"
    for name in names[1:]:
        for metric in ("bleu4", "rouge_l", "cider_d", "f1_micro_14"):
            assert tests["systems"][name][metric]["p_value"] == pytest.approx(expected["systems"][name][metric]["p_value"]), (name, metric)
    printed = proc.stdout + proc.stderr
    assert "Significance vs DVE+Transformer (paired approximate randomisation (two-sided), R=200" in printed
    assert re.search(r"\| RePaiR-2 \| .*p=\d\.\d{4}", printed) and (tmp_path / "significance.md").exists()


def test_tab4_paper_rows_follow_the_generated_sets_paper_columns():
    from cxr_irgen.eval.compare_reports import generated_rows

    sets = [{"name": "mine", "paper": "10k steps with RIE"}, {"name": "other", "paper": None}]
    cell = {"chexpert_f1": {"positive_only": {"micro_14": {"value": 0.5}}}}
    rows = generated_rows([{"name": "ours", "paper": "M2Trans", "generated": {"mine": cell}}, {"name": "RePaiR", "paper": "CXR-RePaiR-2"}], sets, show_paper=True)
    assert rows == [["ours", 0.5, None], ["M2Trans (paper's Tab. 4)", 0.3738, None], ["RePaiR", None, None]]


def test_generated_sets_need_label_vectors_and_known_paper_columns(generate_runs, tmp_path):
    from cxr_irgen.errors import UserError
    from cxr_irgen.eval.compare_reports import _generated_sets

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.png").write_bytes((generate_runs / "gen-a" / "pairs" / "0000.png").read_bytes())  # an image without its labels
    with pytest.raises(UserError, match="needs the label vector it was generated from"):
        _generated_sets([str(tmp_path / "plain")])
    with pytest.raises(UserError, match="use one of 5k steps without RIE"):
        _generated_sets([{"path": str(generate_runs / "gen-a"), "paper": "20k steps"}])
    assert len(_generated_sets([str(generate_runs / "gen-a")])[0]["labels"]) == 4


def test_paper_rows_sit_beside_their_measured_rows():
    from cxr_irgen.eval.compare_reports import COLUMNS, table_rows

    rows = table_rows([{"name": "ours", "paper": "CXR-RePaiR-Select", "text": {"bleu2": 0.1}}, {"name": "other", "paper": None}], show_paper=True)
    header = ["Generator", *[name for name, _ in COLUMNS]]
    assert [r[0] for r in rows] == ["ours", "CXR-RePaiR-Select (paper's Tab. 3)", "other"]
    paper = dict(zip(header, rows[1]))
    assert paper["BLEU-2"] == 0.050 and paper["F1 (paper's, as printed)"] == 0.274 and paper["BLEU-1"] is None
    assert len(table_rows([{"name": "ours", "paper": "R2Gen"}], show_paper=False)) == 1


@pytest.mark.parametrize("runs,message", [
    ([], "runs=[] is empty"), (["/no/such/run"], "holds no report generator"),
    ([{"path": "/tmp", "colour": "red"}], "unknown keys ['colour']"),
])
def test_bad_run_entries_are_one_line_errors_before_any_model_loads(runs, message):
    from cxr_irgen.errors import UserError
    from cxr_irgen.eval.compare_reports import _entries

    with pytest.raises(UserError, match=re.escape(message)):
        _entries(runs)


def test_bad_paper_name_and_duplicate_names_are_refused(saved_generators):
    from cxr_irgen.errors import UserError
    from cxr_irgen.eval.compare_reports import _entries

    path = str(saved_generators / "repair")
    with pytest.raises(UserError, match="paper='R3Gen'"):
        _entries([{"path": path, "paper": "R3Gen"}])
    with pytest.raises(UserError, match="run names must differ"):
        _entries([path, path])
