"""Significance of the differences between systems scored on the same test set.

Reports — paired approximate randomisation (RadEval's ``compare_systems``; Riezler & Maxwell 2005): for
each of ``n_resamples`` trials every test item's two outputs (baseline's, system's) are swapped with
probability ½, the **corpus** metric is recomputed for both shuffled systems and the trial counts when
``|Δ*| ≥ |Δ|`` (Δ: the observed system − baseline difference). Every metric here is a function of the
column sums of per-item statistics (BLEU: clipped n-gram matches, guesses and lengths; both ROUGE-L and
CIDEr-D: the per-report scores, whose mean is the corpus score; CheXpert F1: per-class TP/FP/FN), so
each trial recomputes the exact corpus metric from swapped sums, vectorised. Two-sided
p = (1 + #{|Δ*| ≥ |Δ|}) / (1 + R) (RadEval reports #{…}/R, which can be 0).

Images — paired bootstrap: the real reference set (and, when the systems' generated sets are paired
item by item, their items) is resampled with replacement, the same draw for both systems, and the
metric difference recomputed; p = two-sided share of resampled differences on the other side of 0
(percentile bootstrap), with its 95% interval.

A difference is marked significant when p < ``alpha``. Every result names the test, R and the seed.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cxr_irgen.text.chexpert_f1 import SUBSETS, binarise, f1_from_counts

RANDOMISATION = "paired approximate randomisation (two-sided)"
BOOTSTRAP = "paired bootstrap (two-sided, percentile)"
N_RANDOMISATION, N_BOOTSTRAP, SEED, ALPHA = 10000, 1000, 12345, 0.05

Aggregate = Callable[[np.ndarray], np.ndarray]  # (R, K) summed statistics → (R,) metric values


def _mean_of(n: int) -> Aggregate:
    return lambda sums: sums[:, 0] / n


def report_statistics(generated: Sequence[str], references: Sequence[str]) -> dict[str, tuple[np.ndarray, Aggregate]]:
    """``{metric: ((N, K) per-report statistics, aggregate)}`` for BLEU-1..4, ROUGE-L (coco; and ``rouge_l_stem``: rouge_score's
    stemmed ROUGE-L, RadEval's ``rougeL``) and CIDEr-D (:mod:`~cxr_irgen.text.text_metrics`'s tokeniser and definitions)."""
    from cxr_irgen.text.text_metrics import bleu_from_statistics, bleu_statistics, cider_d_scores, rouge_l_coco_scores, rouge_l_stemmed_scores, tokenize

    hyps = [tokenize(h) for h in generated]
    refs = [[tokenize(r)] for r in references]
    counts = bleu_statistics(hyps, refs)
    out: dict[str, tuple[np.ndarray, Aggregate]] = {f"bleu{n + 1}": (counts, lambda sums, n=n: bleu_from_statistics(sums)[:, n]) for n in range(4)}
    out["rouge_l"] = (rouge_l_coco_scores(hyps, refs)[:, None], _mean_of(len(hyps)))
    out["rouge_l_stem"] = (rouge_l_stemmed_scores(list(generated), [[r] for r in references])[:, None], _mean_of(len(hyps)))
    out["cider_d"] = (cider_d_scores(hyps, refs)[:, None], _mean_of(len(hyps)))
    return out


def label_statistics(generated: np.ndarray, reference: np.ndarray, mapping: str = "positive_only") -> dict[str, tuple[np.ndarray, Aggregate]]:
    """``{f1_<micro|macro>_<14|top5>: ((N, 42) per-report TP/FP/FN of the 14 classes, aggregate)}`` of (N, 14) labels,
    binarised by the named uncertain mapping (:mod:`~cxr_irgen.text.chexpert_f1`)."""
    g, r = binarise(np.asarray(generated, np.float32), mapping).astype(float), binarise(np.asarray(reference, np.float32), mapping).astype(float)
    counts = np.concatenate([g * r, g * (1 - r), (1 - g) * r], axis=1)

    def f1(average: str, columns: tuple[int, ...]) -> Aggregate:
        def aggregate(sums: np.ndarray) -> np.ndarray:
            tp, fp, fn = (sums[:, k * 14:(k + 1) * 14][:, list(columns)] for k in range(3))
            return f1_from_counts(tp.sum(1), fp.sum(1), fn.sum(1)) if average == "micro" else f1_from_counts(tp, fp, fn).mean(1)
        return aggregate

    return {f"f1_{average}_{subset}": (counts, f1(average, columns)) for subset, columns in SUBSETS.items() for average in ("micro", "macro")}


def approximate_randomisation(baseline: np.ndarray, system: np.ndarray, aggregate: Aggregate, n_resamples: int = N_RANDOMISATION,
                              seed: int = SEED, chunk: int = 500) -> dict:
    """Paired approximate randomisation of one corpus metric: (N, K) per-item statistics of both systems on the same items.

    Returns ``{"baseline", "system", "difference", "p_value", "n_resamples", "seed", "test"}``.
    """
    baseline, system = np.asarray(baseline, np.float64), np.asarray(system, np.float64)
    if baseline.shape != system.shape or baseline.ndim != 2 or not len(baseline):
        raise ValueError(f"approximate randomisation needs two (N, K) statistics of the same items, got {baseline.shape} and {system.shape}")
    total_b, total_s = baseline.sum(0), system.sum(0)
    value_b, value_s = (float(v) for v in aggregate(np.stack([total_b, total_s])))
    observed = abs(value_s - value_b)
    change = system - baseline
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, chunk):
        swaps = (rng.random((min(chunk, n_resamples - start), len(baseline))) < 0.5).astype(np.float64)
        moved = swaps @ change  # (R, K): what swapping those items moves from the system's sums to the baseline's
        shuffled = np.abs(aggregate(total_s - moved) - aggregate(total_b + moved))
        extreme += int((shuffled >= observed - 1e-12).sum())
    return {"baseline": value_b, "system": value_s, "difference": value_s - value_b, "p_value": (1 + extreme) / (1 + n_resamples),
            "n_resamples": n_resamples, "seed": seed, "test": RANDOMISATION}


def compare_report_systems(systems: dict[str, Sequence[str]], references: Sequence[str], labels: dict[str, np.ndarray] | None = None,
                           reference_labels: np.ndarray | None = None, n_resamples: int = N_RANDOMISATION, seed: int = SEED,
                           alpha: float = ALPHA, mapping: str = "positive_only") -> dict:
    """Every system against the first (the baseline) on the same items: text metrics and, with ``labels`` (per system, (N, 14))
    and ``reference_labels``, CheXpert F1 (``mapping``). ``{"baseline", "test", "n_resamples", "seed", "alpha", "f1_mapping",
    "systems": {name: {metric: {"value", "difference", "p_value", "significant"}}}}`` (the baseline: values only)."""
    names = list(systems)
    if len(names) < 2:
        raise ValueError("a significance test needs at least two systems")
    statistics = {name: report_statistics(systems[name], references) for name in names}
    if labels is not None and reference_labels is not None:
        for name in names:
            statistics[name].update(label_statistics(labels[name], reference_labels, mapping))
    base = names[0]
    out = {"baseline": base, "test": RANDOMISATION, "n_resamples": n_resamples, "seed": seed, "alpha": alpha,
           "f1_mapping": mapping if labels is not None else None, "p_value_rule": "(1 + #{|Δ*| ≥ |Δ|}) / (1 + R)", "systems": {}}
    for name in names:
        rows = {}
        for metric, (stats, aggregate) in statistics[name].items():
            if name == base:
                rows[metric] = {"value": float(aggregate(stats.sum(0)[None])[0])}
                continue
            test = approximate_randomisation(statistics[base][metric][0], stats, aggregate, n_resamples, seed)
            rows[metric] = {"value": test["system"], "difference": test["difference"], "p_value": test["p_value"], "significant": test["p_value"] < alpha}
        out["systems"][name] = rows
    return out


def paired_bootstrap(metric: Callable, generated_a: np.ndarray, generated_b: np.ndarray, real: np.ndarray | None,
                     n_resamples: int = N_BOOTSTRAP, seed: int = SEED, paired_items: bool | None = None) -> dict:
    """Paired bootstrap of ``metric(generated, real)`` (e.g. FID of (N, D) features) for system B − system A on the same real set;
    ``real=None``: no real side, ``metric(generated, None)`` (e.g. AUROC of rows of classifier outputs and labels).

    Each resample draws the real rows with replacement once for both systems; the generated rows are drawn with the
    same indices for both when ``paired_items`` (default: both sets have the same length), else independently.
    Resamples where either value is NaN (e.g. an AUROC group left empty) are dropped and counted.
    Returns ``{"a", "b", "difference", "ci95", "p_value", "n_resamples", "n_valid_resamples", "seed", "paired_items", "test"}``.
    """
    generated_a, generated_b = np.asarray(generated_a, np.float64), np.asarray(generated_b, np.float64)
    real = None if real is None else np.asarray(real, np.float64)
    paired = len(generated_a) == len(generated_b) if paired_items is None else paired_items
    if paired and len(generated_a) != len(generated_b):
        raise ValueError(f"paired items need generated sets of the same length, got {len(generated_a)} and {len(generated_b)}")
    rng = np.random.default_rng(seed)
    differences = np.empty(n_resamples)
    for r in range(n_resamples):
        pick_real = None if real is None else real[rng.integers(0, len(real), len(real))]
        pick_a = rng.integers(0, len(generated_a), len(generated_a))
        pick_b = pick_a if paired else rng.integers(0, len(generated_b), len(generated_b))
        differences[r] = metric(generated_b[pick_b], pick_real) - metric(generated_a[pick_a], pick_real)
    value_a, value_b = metric(generated_a, real), metric(generated_b, real)
    valid = differences[np.isfinite(differences)]
    if not len(valid):
        raise ValueError("paired bootstrap: the metric is NaN on every resample")
    tail = min((valid <= 0).mean(), (valid >= 0).mean())
    return {"a": value_a, "b": value_b, "difference": value_b - value_a, "ci95": [float(np.percentile(valid, 2.5)), float(np.percentile(valid, 97.5))],
            "p_value": float(min(1.0, 2 * tail)), "n_resamples": n_resamples, "n_valid_resamples": len(valid), "seed": seed, "paired_items": paired,
            "test": BOOTSTRAP}


def significance_markdown(result: dict, metrics: Sequence[str] | None = None, digits: int = 3) -> list[str]:
    """A markdown table of :func:`compare_report_systems`: value, then ``(p=…)`` and ``*`` when p < alpha, per system and metric."""
    shown = list(metrics or result["systems"][result["baseline"]])
    header = ["System", *shown]
    lines = [f"### Significance vs {result['baseline']} ({result['test']}, R={result['n_resamples']}, seed {result['seed']}; "
             f"* p < {result['alpha']}; p = {result['p_value_rule']}" + (f"; F1 mapping {result['f1_mapping']})" if result.get("f1_mapping") else ")"),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rows in result["systems"].items():
        cells = []
        for metric in shown:
            row = rows.get(metric)
            if row is None:
                cells.append("—")
            elif "p_value" not in row:
                cells.append(f"{row['value']:.{digits}f} (baseline)")
            else:
                cells.append(f"{row['value']:.{digits}f} (Δ {row['difference']:+.{digits}f}, p={row['p_value']:.4f}){' *' if row['significant'] else ''}")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines
