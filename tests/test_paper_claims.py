"""benchmarks/paper_claims.py: the verdict rule on constructed per-seed numbers, and --smoke end to end (every arm runs
through the real commands at tiny size; a second call reuses the finished runs)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from eval_threads import one_thread  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
paper_claims = importlib.import_module("paper_claims")


def test_effect_is_signed_in_the_papers_direction_with_a_t_interval_over_seeds():
    from scipy import stats

    fid = {"ref": [40.0, 42.0, 41.0], "text": [50.0, 49.0, 53.0]}  # lower is better: text − ref = 10, 7, 12
    row = paper_claims.compare("c", "Tab. 1", "FID", fid, "ref", "text", higher_is_better=False)
    low, high = stats.t.interval(0.95, 2, loc=np.mean([10, 7, 12]), scale=stats.sem([10, 7, 12]))
    assert row["effect"] == pytest.approx(29 / 3) and row["ci95"] == pytest.approx([low, high]) and row["verdict"] == "confirmed at this scale"
    flipped = paper_claims.compare("c", "Tab. 1", "FID", fid, "text", "ref", higher_is_better=False)
    assert flipped["effect"] == pytest.approx(-29 / 3) and flipped["verdict"] == "not confirmed at this scale (opposite effect)"
    noisy = paper_claims.compare("c", "Fig. 5", "BLEU", {"mean": [0.3, 0.1, 0.5], "bos": [0.2, 0.3, 0.2]}, "mean", "bos", higher_is_better=True)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["verdict"] == "not confirmed at this scale"
    partial = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [0.7, None], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert partial["n_seeds"] == 1 and partial["effect"] == pytest.approx(0.1) and partial["verdict"].endswith("(one seed: no interval)")
    undefined = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [float("nan"), 0.7], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert undefined["effect"] is None and undefined["verdict"].startswith("not measured")
    unfinished = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [None, None], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert unfinished["n_seeds"] == 0 and unfinished["verdict"].startswith("not run")


@pytest.mark.slow
def test_smoke_runs_every_arm_and_reuses_finished_runs(tmp_path, capsys, one_thread):
    summary = paper_claims.main(["--smoke", "--seeds", "1", "--threads", "1", "--out", str(tmp_path / "claims")])
    assert [row["source"] for row in summary["claims"]] == ["Tab. 1", "Tab. 2", "Fig. 5", "Fig. 5", "Tab. 5", "Tab. 5", "Tab. 5", "Tab. 5"]
    assert {arm: len(v) for arm, v in summary["values"]["bleu"].items()} == {"mean": 1, "bos": 1, "eos": 1}
    assert set(summary["values"]["input_f1"]) == {"clip", "latent", "image"} and set(summary["values"]["loss_f1"]) == {"mse+cos", "mse", "cos"}
    assert summary["values"]["loss_f1"]["mse+cos"] == summary["values"]["input_f1"]["image"]  # one run serves both claims
    assert all(np.isfinite(v) for v in summary["values"]["fid"]["concat"] + summary["values"]["fid"]["text"])
    assert all(row["ci95"] is None and row["verdict"].startswith("not ") for row in summary["claims"])  # one seed: never "confirmed"
    table = (tmp_path / "claims" / "claims.md").read_text()
    assert table.count("\n") == 2 + 8 and "random weights" in table and "| 1 | not confirmed at this scale (one seed" in table
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "paper_claims"
    again = paper_claims.main(["--smoke", "--seeds", "1", "--threads", "1", "--out", str(tmp_path / "claims"), "--table-only"])
    assert json.dumps(again["values"]) == json.dumps(summary["values"])  # read back from the finished runs (NaN: AUROC undefined)
