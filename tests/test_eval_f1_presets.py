"""F1 protocol presets (miura2021, endo2021, r2gen) on a hand-made label table with hand-computed F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from cxr_irgen.data.labels import LABEL_INDEX
from cxr_irgen.eval.f1_presets import PRESETS, all_presets, preset_f1

CARD, EDEMA, PNEU, EFF = (LABEL_INDEX[n] for n in ("Cardiomegaly", "Edema", "Pneumonia", "Pleural Effusion"))


def _table(rows: list[dict[int, float]]) -> np.ndarray:
    table = np.full((len(rows), 14), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for column, value in row.items():
            table[i, column] = value
    return table


REFERENCE = _table([{CARD: 1, EFF: -1}, {EDEMA: 1}, {PNEU: 1}, {}])
GENERATED = _table([{CARD: 1, EFF: 1}, {EDEMA: -1}, {PNEU: 1, CARD: 0}, {EFF: -1}])


def test_miura2021_counts_uncertain_as_positive_micro_over_top5():
    # top-5 positives with -1 → 1: reference {r0 Card, r0 Eff, r1 Edema}; generated adds r3 Eff. TP 3, FP 1, FN 0.
    out = preset_f1(GENERATED, REFERENCE, "miura2021")
    assert out["micro_top5"]["value"] == pytest.approx(6 / 7)
    assert set(out) == {"preset", "description", "n_reports", "micro_top5"}


def test_r2gen_maps_uncertain_and_blank_to_negative_micro_and_macro_over_14():
    # -1 → 0: reference {r0 Card, r1 Edema, r2 Pneumonia}, generated {r0 Card, r0 Eff, r2 Pneumonia}: TP 2, FP 1, FN 1.
    out = preset_f1(GENERATED, REFERENCE, "r2gen")
    assert out["micro_14"]["value"] == pytest.approx(2 / 3)
    assert out["macro_14"]["value"] == pytest.approx(2 / 14)  # Cardiomegaly and Pneumonia 1, every other class 0


def test_endo2021_is_the_mean_macro_f1_over_ten_seeded_resamples():
    rng = np.random.default_rng(0)
    values = np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32)
    reference = values[rng.choice(4, size=(60, 14))]
    generated = np.where(rng.random((60, 14)) < 0.6, reference, values[rng.choice(4, size=(60, 14))])
    out = preset_f1(generated, reference, "endo2021", seed=5)["macro_14"]
    y_true, y_pred = reference == 1, generated == 1
    assert out["full_set"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    picks = np.random.default_rng(5).integers(0, 60, size=(10, 60))
    by_hand = [f1_score(y_true[p], y_pred[p], average="macro", zero_division=0) for p in picks]
    assert out["value"] == pytest.approx(np.mean(by_hand))
    assert out["n_bootstrap"] == 10 and out["half_width_95"] > 0
    assert preset_f1(generated, reference, "endo2021", seed=5)["macro_14"] == out
    assert preset_f1(GENERATED, REFERENCE, "endo2021")["macro_14"]["full_set"] == pytest.approx(2 / 14)


def test_every_preset_is_named_and_bad_input_is_refused():
    assert set(all_presets(GENERATED, REFERENCE)) == set(PRESETS)
    with pytest.raises(ValueError, match="unknown F1 preset"):
        preset_f1(GENERATED, REFERENCE, "nope")
    with pytest.raises(ValueError, match=r"\(N, 14\)"):
        preset_f1(GENERATED[:, :5], REFERENCE[:, :5], "r2gen")
