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
    assert flipped["effect"] == pytest.approx(-29 / 3) and flipped["verdict"] == "refuted at this scale"
    noisy = paper_claims.compare("c", "Fig. 5", "BLEU", {"mean": [0.3, 0.1, 0.5], "bos": [0.2, 0.3, 0.2]}, "mean", "bos", higher_is_better=True)
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["verdict"] == "no significant difference"
    partial = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [0.7, None], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert partial["n_seeds"] == 1 and partial["effect"] == pytest.approx(0.1) and partial["verdict"] == "undecided (one seed: no interval)"
    undefined = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [float("nan"), 0.7], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert undefined["effect"] is None and undefined["verdict"].startswith("not measured")
    unfinished = paper_claims.compare("c", "Tab. 2", "AUROC", {"a": [None, None], "b": [0.6, 0.5]}, "a", "b", higher_is_better=True)
    assert unfinished["n_seeds"] == 0 and unfinished["verdict"].startswith("not run")


def test_a_row_whose_arms_sit_at_their_controls_says_no_signal():
    """Chance controls: an arm shows a signal only above its control; a floor (real data): only when distinguishable from it."""
    arms = {"a": [0.52, 0.49, 0.55, 0.50], "b": [0.43, 0.46, 0.44, 0.45]}  # a beats b on every seed...
    chance = {"a": [0.51, 0.50, 0.52, 0.50], "b": [0.50, 0.50, 0.50, 0.50]}  # ...but neither beats chance
    row = paper_claims.compare("c", "Tab. 2", "AUROC", arms, "a", "b", True, chance)
    assert row["ci95"][0] > 0 and row["above_control"] == {"a": False, "b": False} and row["verdict"] == "no signal (both arms at the control)"
    learned = {"a": [0.80, 0.85, 0.82, 0.81], "b": [0.70, 0.72, 0.71, 0.69]}
    assert paper_claims.compare("c", "Tab. 2", "AUROC", learned, "a", "b", True, chance)["verdict"] == "confirmed at this scale"
    fid = {"a": [10.0, 11.0, 10.5], "b": [12.0, 12.5, 13.0]}
    at_floor = paper_claims.compare("c", "Tab. 1", "FID", fid, "a", "b", False, {"a": fid["a"], "b": fid["b"]}, "floor")
    assert at_floor["verdict"] == "no signal (both arms at the control)"
    floor = paper_claims.compare("c", "Tab. 1", "FID", fid, "a", "b", False, {"a": [1.0, 1.1, 0.9], "b": [1.0, 1.1, 0.9]}, "floor")
    assert floor["above_control"] == {"a": True, "b": True} and floor["verdict"] == "confirmed at this scale"


def test_sampler_rows_pair_each_sampler_with_the_papers_pndm_50():
    scale = {"sampler_steps": [20, 50], "claim_sampler": ["ddim", 20]}
    values = {f"sampler_{m}": {f"{s}-{k}": [None] * 3 for s in paper_claims.SAMPLERS for k in (20, 50)} for m in ("fid", "auroc")}
    values["sampler_fid"]["pndm-50"] = [10.0, 12.0, 11.0]
    values["sampler_fid"]["ddim-20"] = [11.0, 14.0, 12.0]
    rows = paper_claims.sampler_rows(values, scale, {"images_per_s": {"ddim-20": 4.0}})
    ddim = next(r for r in rows if (r["sampler"], r["steps"]) == ("ddim", 20))
    assert ddim["fid"]["vs_paper"] == pytest.approx(4 / 3) and ddim["images_per_s"] == 4.0 and ddim["fid"]["n_seeds"] == 3
    assert "vs_paper" not in next(r for r in rows if (r["sampler"], r["steps"]) == ("pndm", 50))["fid"]
    table = paper_claims.samplers_table(rows)
    assert "| ddim | 20 | 12.33 [" in table and "| +1.33 [" in table and table.count("\n") == 2 + 6


@pytest.mark.slow
def test_smoke_runs_every_arm_and_reuses_finished_runs(tmp_path, capsys, one_thread):
    summary = paper_claims.main(["--smoke", "--seeds", "1", "--threads", "1", "--out", str(tmp_path / "claims")])
    assert [row["source"] for row in summary["claims"]] == ["Tab. 1", "Tab. 2", "Fig. 5", "Fig. 5", "Tab. 5", "Tab. 5", "Tab. 5", "Tab. 5"]
    assert {arm: len(v) for arm, v in summary["values"]["bleu"].items()} == {"mean": 1, "most frequent": 1, "bos": 1, "eos": 1}
    assert set(summary["values"]["input_f1"]) == {"classifier", "latent", "image"} and set(summary["values"]["loss_f1"]) == {"mse+cos", "mse", "cos"}
    assert summary["values"]["loss_f1"]["mse+cos"] == summary["values"]["input_f1"]["image"]  # one run serves both claims
    fid = summary["values"]["fid"]
    assert all(np.isfinite(v) for v in fid["concat"] + fid["text"] + fid["real-train"]) and fid["real-train"][0] < fid["concat"][0]
    assert summary["values"]["sampler_fid"]["ddim-2"] == fid["concat"]  # the claim's sampler is one cell of the sampler table
    assert len(summary["samplers"]) == 6 and all(set(r["images_per_s"] for r in summary["samplers"]) - {None})
    assert all(row["ci95"] is None and not row["verdict"].startswith("confirmed") for row in summary["claims"])  # one seed: never confirmed
    table = (tmp_path / "claims" / "claims.md").read_text()
    assert table.count("\n") == 2 + 8 + 1 + 2 + 6 and "stand in for a pretrained image embedding" in table and "real-data floor" in table
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "paper_claims"
    again = paper_claims.main(["--smoke", "--seeds", "1", "--threads", "1", "--out", str(tmp_path / "claims"), "--table-only"])
    assert json.dumps(again["values"]) == json.dumps(summary["values"])  # read back from the finished runs (NaN: AUROC undefined)
