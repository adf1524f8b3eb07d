"""`cxr-irgen evaluate` on other generators' layouts (issue 25, item 1): the worked examples of
docs/evaluate-any-generator.md run as written on 32 phantom images with free-text prompts; every table, per-pathology
rows and the three agreements come out; mismatched columns and unreadable images give one line and exit 2 (or are
skipped with data.skip_bad=true)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_layouts import N_GENERATED, chosen, classifier, evaluate_overrides, phantoms, write_layouts  # noqa: F401  (fixtures)
from eval_threads import one_thread  # noqa: F401  (fixture)
from PIL import Image

from cxr_irgen.cli import main
from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX
from cxr_irgen.errors import UserError
from cxr_irgen.eval.generated import InputSpec, load_generated

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluate-any-generator.md"
COMMANDS = [line for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S) for line in block.splitlines() if line.startswith("cxr-irgen ")]


@pytest.fixture(scope="module")
def layouts(chosen, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("layouts")
    write_layouts(chosen, root)
    return root


@pytest.fixture(scope="module")
def inception_pth(tmp_path_factory):
    """torch-fidelity's Inception-v3 architecture with seeded random weights, saved as its .pth (the real file needs a
    download): the Inception Score's code path runs; its value here means nothing and is not checked."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(folder / "empty.pth"))
    path = folder / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


ALL_IMAGE_METRICS = "[fid,kid,prdc,per_pathology,privacy,inception_score,psnr_ssim,diversity,auroc,text,chexpert_f1,guards,agreement]"


def _evaluate(argv: list[str], out: Path) -> dict:
    main([*argv, f"hydra.run.dir={out}"])
    return json.loads((out / "metrics.json").read_text())


def test_the_docs_page_has_one_command_per_layout():
    assert len(COMMANDS) == 4 and all(c.startswith("cxr-irgen evaluate ") and "data.root=data/phantoms" in c for c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("number", range(4))
def test_docs_command_runs_as_written(number, layouts, phantoms, classifier, chosen, inception_pth, monkeypatch, one_thread):  # noqa: F811
    monkeypatch.chdir(layouts)
    argv = shlex.split(COMMANDS[number].replace("data.root=data/phantoms", ""))[1:]
    out = layouts / f"run{number}"
    every = [f"eval.metrics={ALL_IMAGE_METRICS}", "eval.privacy.n_train=64", "eval.privacy.resolution=32",
             f"eval.inception_score.weights={inception_pth}", "eval.inception_score.splits=4"] if "report_column" in COMMANDS[number] else []
    metrics = _evaluate([*argv, *evaluate_overrides(phantoms, classifier), *every], out)
    tables = (out / "tables.md").read_text()
    if "generated_reports=" in COMMANDS[number]:
        assert metrics["text"]["n_reports"] == N_GENERATED and metrics["chexpert_f1"]["labeler"] == "rules"
        assert metrics["generated"]["n_images"] == 0 and "Table 3" in tables
        return
    assert metrics["fid"]["n_generated"] == N_GENERATED and "random_weights" not in metrics["fid"]
    assert metrics["generated"]["labels_from"] == {"labeler rules on the prompt": N_GENERATED}
    per = metrics["per_pathology"]["labels"]
    assert list(per) == list(CHEXPERT_LABELS)
    assert any("fid" in e for e in per.values()) and any(e.get("skipped") for e in per.values())
    table9 = pd.read_csv(out / "table9.csv")
    assert len(table9) == 14 and table9["N gen"].tolist() == [e["n_generated"] for e in per.values()]
    assert table9["FID"].str.startswith("skipped: fewer than min_n=3").sum() == sum(bool(e.get("skipped")) for e in per.values())
    provenance = metrics["provenance"]
    assert provenance["packages"]["torch"] and provenance["n"]["generated_images"] == N_GENERATED and provenance["seeds"]["eval.seed"] == 1234
    assert list(provenance["feature_extractor"]["weights_sha256"]) == [str(classifier / "model.safetensors")]
    if "report_column" in COMMANDS[number]:  # image-report pairs: the three agreements, each with its CI
        agreement = metrics["agreement"]
        assert agreement["n_pairs"] == N_GENERATED
        for pair in ("image_vs_requested", "report_vs_requested", "image_vs_report"):
            assert agreement[pair]["accuracy"]["ci95"] is not None and set(agreement[pair]["per_label"]) == set(agreement["labels"])
        assert len(pd.read_csv(out / "table10.csv")) == 3 and "Table 10" in tables
        for table in ("Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table 6", "Table 9", "Privacy:"):
            assert table in tables
        assert metrics["inception_score"]["n"] == N_GENERATED and metrics["inception_score"]["splits"] == 4
        assert "Inception Score" in pd.read_csv(out / "table1.csv").columns[-1]
        privacy = metrics["privacy"]
        assert privacy["n_generated"] == N_GENERATED and privacy["n_training"] == 64 and (out / "privacy_pairs.png").is_file()
        assert 0 <= privacy["pixel_rms"]["share_below"] <= 1 and privacy["feature_distance"]["threshold_rule"].startswith("q0.05")
        assert metrics["auroc"]["generated"]["per_pathology"] and metrics["text"]["n_reports"] == N_GENERATED
    else:
        assert "no generated image comes with both a report" in metrics["skipped"]["agreement"]


def test_free_text_prompts_are_labelled_by_the_labeler(layouts, chosen):  # noqa: F811
    table = load_generated(str(layouts / "my_images"), inputs=InputSpec(table="prompts.csv"), labeler={"backend": "rules"})
    cardiomegaly = np.array([v[LABEL_INDEX["Cardiomegaly"]] == 1.0 for v in table["labels"]])
    assert cardiomegaly.tolist() == [v[LABEL_INDEX["Cardiomegaly"]] == 1.0 for v in chosen["labels"]] and cardiomegaly.any()
    assert set(table["labels_from"]) == {"labeler rules on the prompt"} and table["report"].notna().sum() == 0  # no report_column given


def test_labels_column_template_prompts_and_jsonl(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "1.png")
    rows = [{"prompt": "A chest X-Ray image with cardiomegaly", "labels": None}, {"prompt": "free text", "labels": "Edema=1"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = load_generated(str(tmp_path), inputs=InputSpec(table="p.jsonl", image_column=None, labels_column="labels"))
    assert table["labels_from"].tolist() == ["template prompt", "labels column"]
    assert table.loc[0, "labels"][LABEL_INDEX["Cardiomegaly"]] == 1 and table.loc[1, "labels"][LABEL_INDEX["Edema"]] == 1
    with pytest.raises(UserError, match="not a CXR-IRGen prompt"):
        load_generated(str(tmp_path), inputs=InputSpec(table="p.jsonl", image_column=None, prompt_labels="template"))


def test_mismatches_name_the_column_or_file(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "0.png")
    pd.DataFrame({"caption": ["x", "y"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(UserError, match=r"prompt_column='prompt': no such column .* available columns: caption"):
        load_generated(str(tmp_path), inputs=InputSpec(table="p.csv"))
    with pytest.raises(UserError, match=r"no image named 1 \(e.g. 1.png or 00001.png\); 1 of 2 rows"):
        load_generated(str(tmp_path), inputs=InputSpec(table="p.csv", prompt_column="caption", image_column=None))
    with pytest.raises(UserError, match=r"image_column='file_name': no such column"):
        load_generated(str(tmp_path), inputs=InputSpec(table="p.csv", prompt_column="caption", image_column="file_name"))
    with pytest.raises(UserError, match="eval.inputs.table=.*nope.csv: no such file"):
        load_generated(str(tmp_path), inputs=InputSpec(table="nope.csv"))
    with pytest.raises(UserError, match="unknown key"):
        InputSpec.from_cfg({"tabel": "p.csv"})


def test_cli_mismatched_column_is_one_line_exit_2_without_a_run_dir(layouts, phantoms, classifier, capsys, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", f"generated={layouts / 'my_images'}", "eval.inputs.table=prompts.csv", "eval.inputs.prompt_column=caption",
              *evaluate_overrides(phantoms, classifier), f"hydra.run.dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "'caption'" in err[0] and "available columns: image, prompt, report, reference" in err[0]
    assert not out.exists()


def test_unreadable_image_exits_2_or_is_skipped(layouts, phantoms, classifier, capsys, tmp_path, one_thread):  # noqa: F811
    folder = tmp_path / "gen"
    folder.mkdir()
    for image in sorted((layouts / "roentgen_out").glob("*.png")):
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "prompts.csv").write_bytes((layouts / "roentgen_out" / "prompts.csv").read_bytes())
    (folder / "5.png").write_bytes(b"not a png")
    argv = ["evaluate", f"generated={folder}", "eval.inputs.table=prompts.csv", "eval.inputs.image_column=null", "eval.metrics=[fid]",
            *evaluate_overrides(phantoms, classifier)]
    with pytest.raises(SystemExit) as stop:
        main([*argv, f"hydra.run.dir={tmp_path / 'failed'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]  # progress bars aside
    assert stop.value.code == 2 and len(err) == 1 and "5.png" in err[0] and "data.skip_bad=true" in err[0]
    assert not (tmp_path / "failed").exists()
    metrics = _evaluate([*argv, "data.skip_bad=true"], tmp_path / "skipped")
    assert metrics["skipped_images"]["n"] == 1 and metrics["skipped_images"]["generated"][0]["image"].endswith("5.png")
    assert metrics["fid"]["n_generated"] == N_GENERATED - 1


def test_reports_csv_with_study_ids_takes_references_from_the_real_data(phantoms, tmp_path):  # noqa: F811
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.sections import load_report_sections

    table = load_index(phantoms)
    sections = load_report_sections(table[table["split"] == "test"])
    studies = sections[sections["findings"].fillna("").str.strip() != ""].head(4)
    csv = tmp_path / "reports.csv"
    pd.DataFrame({"generated": studies["findings"], "study_id": studies["study_id"]}).to_csv(csv, index=False)
    main(["evaluate", f"generated_reports={csv}", "eval.text.report_column=generated", f"data.root={phantoms}", "eval.metrics=[text,chexpert_f1]",
          "eval.text.meteor=false", "eval.chexpert_f1.n_bootstrap=10", f"hydra.run.dir={tmp_path / 'run'}"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["text"]["n_reports"] == 4 and metrics["text"]["bleu1"] > 0.99 and metrics["text"]["reference_section"] == "findings"
    assert metrics["provenance"]["n"]["generated_reports"] == 4
    with pytest.raises(UserError, match=r"needs a 'generated' column .* or 'study_id' column; available columns: report, study"):
        load_generated(None, str(_csv(tmp_path / "bad.csv", report=["x"], study=["1"])), "generated", "reference")
    with pytest.raises(UserError, match=r"row 0: study_id 'abc' is not a number"):
        load_generated(None, str(_csv(tmp_path / "bad2.csv", generated=["x"], study_id=["abc"])), "generated", "reference")


def _csv(path: Path, **columns) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_jsonl_prompts_table_with_labels_column_runs_in_the_cli(layouts, phantoms, classifier, chosen, tmp_path, one_thread):  # noqa: F811
    from cxr_irgen.data.labels import format_labels

    folder = layouts / "my_images"
    rows = [{"image": str(folder / f"img_{i:03d}.png"), "caption": "", "findings": format_labels(v)} for i, v in enumerate(chosen["labels"])]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = _evaluate(["evaluate", f"generated={folder}", f"eval.inputs.table={tmp_path / 'prompts.jsonl'}", "eval.inputs.labels_column=findings",
                         "eval.inputs.prompt_column=caption", "eval.metrics=[fid,per_pathology]", *evaluate_overrides(phantoms, classifier)], tmp_path / "run")
    assert metrics["generated"]["labels_from"] == {"labels column": N_GENERATED} and metrics["fid"]["n_generated"] == N_GENERATED
    per = metrics["per_pathology"]["labels"]
    assert [per[n]["n_generated"] for n in CHEXPERT_LABELS] == np.sum(np.stack(chosen["labels"]) == 1.0, axis=0).tolist()
