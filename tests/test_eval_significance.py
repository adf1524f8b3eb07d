"""Significance between systems: approximate randomisation recomputes the exact corpus metrics; a planted difference is
significant and a null one is not (at the seeded resamples); the paired bootstrap does the same for FID."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_irgen.eval.significance import approximate_randomisation, compare_report_systems, label_statistics, paired_bootstrap, report_statistics, significance_markdown

WORDS = "heart size normal lungs clear no pleural effusion pneumothorax mild cardiomegaly opacity left right base stable".split()


def _corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(6, 14))) + "." for _ in range(n)]


def _degrade(references: list[str], keep: float, seed: int) -> list[str]:
    """Each word kept with probability ``keep``, else replaced by a random word: a system of quality ``keep``."""
    rng = np.random.default_rng(seed)
    return [" ".join(w if rng.random() < keep else str(rng.choice(WORDS)) for w in r.rstrip(".").split()) + "." for r in references]


def test_statistics_aggregate_to_the_corpus_metrics():
    from cxr_irgen.text.chexpert_f1 import chexpert_f1
    from cxr_irgen.text.text_metrics import text_metrics

    references = _corpus(40, 0)
    generated = _degrade(references, 0.6, 1)
    expected = text_metrics(generated, references, with_meteor=False)
    for metric, (stats, aggregate) in report_statistics(generated, references).items():
        key = {"rouge_l": "rougeL_coco", "rouge_l_stem": "rougeL_f_stem"}.get(metric, metric)
        assert aggregate(stats.sum(0)[None])[0] == pytest.approx(expected[key], rel=1e-12), metric
    rng = np.random.default_rng(2)
    gen_labels, ref_labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(2, 40, 14))
    f1 = chexpert_f1(gen_labels, ref_labels, n_bootstrap=0)
    for metric, (stats, aggregate) in label_statistics(gen_labels, ref_labels, "uncertain_as_positive").items():
        assert aggregate(stats.sum(0)[None])[0] == pytest.approx(f1["uncertain_as_positive"][metric[3:]]["value"], rel=1e-12), metric


def test_randomisation_equals_recomputing_the_corpus_metric_on_swapped_reports():
    """Vectorised sums vs a loop that swaps the report strings and calls text_metrics again, same swap draws."""
    from cxr_irgen.text.text_metrics import text_metrics

    references = _corpus(15, 3)
    base, system = _degrade(references, 0.5, 4), _degrade(references, 0.7, 5)
    n_resamples, seed = 25, 9
    stats_b, stats_s = report_statistics(base, references), report_statistics(system, references)
    swaps = np.random.default_rng(seed).random((n_resamples, len(references))) < 0.5
    for metric, key in (("bleu4", "bleu4"), ("rouge_l", "rougeL_coco"), ("cider_d", "cider_d")):
        test = approximate_randomisation(stats_b[metric][0], stats_s[metric][0], stats_b[metric][1], n_resamples, seed)
        observed = abs(text_metrics(system, references, False)[key] - text_metrics(base, references, False)[key])
        extreme = 0
        for row in swaps:
            b = [s if swap else o for o, s, swap in zip(base, system, row)]
            s = [o if swap else s for o, s, swap in zip(base, system, row)]
            extreme += abs(text_metrics(s, references, False)[key] - text_metrics(b, references, False)[key]) >= observed - 1e-12
        assert test["p_value"] == pytest.approx((1 + extreme) / (1 + n_resamples)), metric


def test_planted_difference_is_significant_and_null_difference_is_not():
    references = _corpus(120, 10)
    rng = np.random.default_rng(11)
    reference_labels = rng.choice([1.0, 0.0], size=(120, 14), p=[0.3, 0.7])
    flip = lambda labels, p, seed: np.where(np.random.default_rng(seed).random(labels.shape) < p, 1.0 - labels, labels)
    systems = {"baseline": _degrade(references, 0.5, 12), "better": _degrade(references, 0.8, 13), "same": _degrade(references, 0.5, 14)}
    labels = {"baseline": flip(reference_labels, 0.3, 15), "better": flip(reference_labels, 0.05, 16), "same": flip(reference_labels, 0.3, 17)}
    result = compare_report_systems(systems, references, labels, reference_labels, n_resamples=2000, seed=12345, alpha=0.05)
    better, same = result["systems"]["better"], result["systems"]["same"]
    for metric in ("bleu1", "bleu4", "rouge_l", "rouge_l_stem", "cider_d", "f1_micro_14", "f1_macro_14", "f1_micro_top5"):
        assert better[metric]["significant"] and better[metric]["difference"] > 0 and better[metric]["p_value"] < 0.01, (metric, better[metric])
        assert not same[metric]["significant"] and same[metric]["p_value"] > 0.05, (metric, same[metric])
    assert result["baseline"] == "baseline" and "p_value" not in result["systems"]["baseline"]["bleu4"]
    table = significance_markdown(result, ["bleu4", "f1_micro_14"])
    assert "R=2000, seed 12345" in table[0] and "* p < 0.05" in table[0]
    assert table[-2].startswith("| better |") and table[-2].count(" *") == 2 and " *" not in table[-1]
    again = compare_report_systems(systems, references, labels, reference_labels, n_resamples=2000, seed=12345)
    assert again["systems"]["same"]["bleu4"]["p_value"] == same["bleu4"]["p_value"]  # seeded


def test_paired_bootstrap_of_fid_marks_only_the_planted_shift():
    from cxr_irgen.eval.image_metrics import fid_from_features

    rng = np.random.default_rng(20)
    real, system_a = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    shifted, null = rng.normal(loc=0.4, size=(300, 4)), rng.normal(size=(300, 4))
    planted = paired_bootstrap(fid_from_features, system_a, shifted, real, n_resamples=300, seed=1)
    assert planted["p_value"] < 0.05 and planted["ci95"][0] > 0 and planted["difference"] > 0 and planted["paired_items"]
    assert planted["b"] == pytest.approx(fid_from_features(shifted, real))
    nothing = paired_bootstrap(fid_from_features, system_a, null, real, n_resamples=300, seed=1)
    assert nothing["p_value"] > 0.05 and nothing["ci95"][0] < 0 < nothing["ci95"][1]


def test_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="same items"):
        approximate_randomisation(np.zeros((3, 2)), np.zeros((4, 2)), lambda s: s[:, 0])
    with pytest.raises(ValueError, match="at least two systems"):
        compare_report_systems({"a": ["x"]}, ["x"])
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(lambda g, r: 0.0, np.zeros((3, 2)), np.zeros((4, 2)), np.zeros((5, 2)), paired_items=True)
