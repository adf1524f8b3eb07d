"""compare-reports: every generator on the same test images, full references, named F1 variants, paper rows on MIMIC only.

The generators here have random weights: the test checks the protocol and the table, not the numbers.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from cxr_irgen.cli import run_command


@pytest.fixture(scope="module")
def saved_generators(tmp_path_factory):
    from cxr_irgen.report_models.encoders import model_config
    from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model
    from cxr_irgen.report_models.repair import RepairGenerator, RetrievalClip
    from cxr_irgen.report_models.retrieval import CorpusIndex
    from cxr_irgen.report_models.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    vocab = Vocabulary.build(["the heart is enlarged .", "no pleural effusion .", "the lungs are clear ."], min_count=1, max_words=20)
    model = build_report_model("dve-tiny", "transformer-tiny", vocab)
    EncoderDecoderGenerator(model, vocab, {"num_beams": 1, "max_length": 12}).save_pretrained(root / "dve-transformer")
    clip_cfg = OmegaConf.to_container(model_config("clip", "vit-tiny"))
    clip_cfg.pop("pretrained")
    clip = RetrievalClip(clip_cfg, int(clip_cfg.pop("image_size")))
    index = CorpusIndex.build(["No acute process.", "Cardiomegaly. Small left effusion.", "Right lower lobe pneumonia."], clip.embed_texts)
    RepairGenerator(clip, index, clip_cfg).save_pretrained(root / "repair")
    return root


def test_one_table_for_every_generator_on_the_same_images(phantom_root, saved_generators, tmp_path):
    from cxr_irgen.data.adapters import load_sections, load_table

    runs = (f"runs=[{{path: {saved_generators / 'dve-transformer'}, name: DVE+Transformer}},"
            f"{{path: {saved_generators / 'repair'}, name: RePaiR-2, decode: {{k: 2}}, paper: CXR-RePaiR-2}},"
            f"{{path: {saved_generators / 'repair'}, name: RePaiR-Select, decode: {{select: true}}, paper: CXR-RePaiR-Select}}]")
    run_command("compare-reports", [f"data.root={phantom_root}", runs, "max_images=12", "n_bootstrap=10", "text=findings", f"hydra.run.dir={tmp_path}"])

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
    assert "paper's Tab. 3" not in markdown.split("\n", 1)[1] and markdown.count("\n| ") == 4  # header + 3 measured rows


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
