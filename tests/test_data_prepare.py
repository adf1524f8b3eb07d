"""`cxr-irgen prepare-data`: counts table, selections.json, cached second run, one-line errors, every data adapter."""

from __future__ import annotations

import json

import pytest
from data_tree import write_tree

from cxr_irgen.cli import main, run_command


def prepare(tmp_path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    run_command("prepare-data", [*overrides, "test_pa_n=5", f"hydra.run.dir={out}"])
    return json.loads((out / "selections.json").read_text())["counts"]


def test_mimic_tree_counts_and_cache(tmp_path, capsys):
    root = write_tree(tmp_path / "m")
    counts = prepare(tmp_path, "run1", "data=mimic", f"data.root={root}")
    assert counts == {
        "images": 12, "studies": 9, "subjects": 5, "images_train": 7, "images_validate": 1, "images_test": 4,
        "studies_with_report": 8, "vision_train_pa": 4, "language_stage1_findings": 3, "language_stage1_impression": 3,
        "language_stage1_findings+impression": 5, "language_stage1_findings_impression_concat": 4, "language_stage2_train": 4, "vision_test_pa_sample": 1,
        "language_test_findings": 1, "language_test_findings_or_impression": 2,
    }
    assert "vision_train_pa" in capsys.readouterr().out
    lengths = json.loads((tmp_path / "run1" / "selections.json").read_text())["token_lengths"]
    assert lengths["findings+impression"]["n"] == 5 and lengths["findings_impression_concat"]["truncated"] == 0.0
    assert list((root / ".cxr_irgen_cache").glob("index-*.parquet")) and list((root / ".cxr_irgen_cache").glob("sections-*.parquet"))
    assert prepare(tmp_path, "run2", "data=mimic", f"data.root={root}") == counts


def test_phantoms_read_like_mimic(phantom_root, tmp_path):
    counts = prepare(tmp_path, "ph", "data=phantom", f"data.root={phantom_root}", f"data.cache_dir={tmp_path / 'cache'}")
    assert counts["images"] == 240 and counts["vision_train_pa"] > 0 and counts["language_stage1_findings"] > 0
    assert counts["language_stage2_train"] > 0 and counts["language_test_findings"] > 0


def test_csv_adapter_on_real_images(shared_data, tmp_path):
    covid = shared_data / "covid-cxr"
    counts = prepare(tmp_path, "csv", "data=csv", f"data.csv={covid / 'metadata.csv'}", f"data.image_root={covid / 'images'}")
    assert counts["images"] == 609 and counts["vision_train_pa"] == 305


def test_iu_xray_adapter(tmp_path):
    """IU X-ray ships inside torchxrayvision: runs without ../shared."""
    assert prepare(tmp_path, "iu", "data=iu_xray")["language_test_findings_or_impression"] > 2000


@pytest.mark.parametrize("overrides, message", [(["data=mimic", "data.root=/no/such/dir"], "data.root=/no/such/dir: not found"), (["data=mimic"], "data.root")])
def test_missing_root_is_one_line(tmp_path, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare-data", *overrides, f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1
