"""Markdown + CSV tables of ``metrics.json``, laid out like the paper's tables.

- Table 1 (image quality): FID, PSNR, SSIM per model; here also MS-SSIM diversity.
- Table 2 (classifier AUROC): per pathology and mean, for the generated images and for
  real test images.
- Table 3 (report quality): BLEU-1..4, ROUGE-L (both variants), CIDEr-D, METEOR, CheXpert F1.
- Table 4: CheXpert F1 in detail: each uncertain mapping × averaging × label set with 95% CIs.
- Table 5: report guards (distinct share, training-copy share) and agreement of the
  generated reports' labels with their conditioning labels.
- Table 6 (beyond the paper, same features as FID): KID mean and std, precision / recall /
  density / coverage, memorisation (share of generated images whose nearest training image
  exceeds the SSIM / feature-cosine threshold, and the highest SSIM).
- Tables 7 and 8 (when ``utility`` / ``report_utility`` ran or were skipped for a reason):
  downstream utility of the synthetic images (:func:`utility_table`) and pairs (:func:`report_utility_table`).
- Table 9 (per pathology, same features as FID): FID / KID / PRDC on the positives of each
  CheXpert label with N per set; a label under ``eval.per_pathology.min_n`` says so.
- Table 10: agreement of generated image–report pairs: classifier on the image, labeler on
  the report, requested labels — micro / macro F1 and accuracy with 95% CIs, and F1 per label.
- Privacy (when it ran): nearest-training-image pixel and feature distances (:func:`cxr_irgen.eval.privacy.privacy_table`).

Column headers name the variant (feature extractor, N, resolution, classifier, labeler,
uncertain mapping, averaging). A metric that did not run shows "skipped: <reason>" (from
``metrics["skipped"]``); a number from randomly initialised weights (only with
``eval.allow_random_weights=true``) is marked in its cell and in the row name; each AUROC
carries its positives/negatives. Other missing values are "—".
"""

from __future__ import annotations

import csv
from pathlib import Path

DASH = "—"


def format_cell(value, digits: int = 4) -> str:
    """A table cell: ``—`` for None, floats to ``digits`` places, anything else as ``str``."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _value(metrics: dict, metric: str, value, digits: int = 4):
    """A cell of ``metric``: the number (marked when it comes from random weights), or why it is missing."""
    if value is None:
        reason = (metrics.get("skipped") or {}).get(metric)
        return f"skipped: {reason}" if reason else None
    if (metrics.get(metric) or {}).get("random_weights"):
        return f"{format_cell(value, digits)} (RANDOM WEIGHTS)"
    return value


def _model(metrics: dict, *shown: str) -> str:
    """The row name, marked when one of the ``shown`` metrics comes from random weights."""
    random = [m for m in shown if (metrics.get(m) or {}).get("random_weights")]
    return metrics["model"] + (f" [random weights: {', '.join(random)}]" if random else "")


def _auroc_cell(entry: dict) -> str:
    return f"{format_cell(entry['auroc'])} ({entry['n_positive']}+/{entry['n_no_finding']}−)"


def _get(metrics: dict, *keys):
    for key in keys:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def table1(metrics: dict) -> tuple[str, list[str], list[list]]:
    fid, pairs, div = metrics.get("fid") or {}, metrics.get("psnr_ssim") or {}, metrics.get("diversity") or {}
    isc = metrics.get("inception_score") or {}
    caption = "Table 1: image quality."
    header = [
        "Model",
        f"FID ({fid.get('feature_extractor', DASH)}; N gen={fid.get('n_generated', DASH)}, N real={fid.get('n_real', DASH)}, {fid.get('resolution', DASH)} px)",
        f"PSNR (label-paired, n={pairs.get('n_pairs', DASH)})",
        "SSIM (gauss 11, σ 1.5, range 1)",
        f"MS-SSIM within label ({div.get('scales', DASH)} scales; lower = more diverse)",
        f"Inception Score (torch-fidelity logits, {isc.get('splits', DASH)} splits, N={isc.get('n', DASH)})",
    ]
    score = f"{isc['mean']:.4f} ± {isc['std']:.4f}" if isc else None
    rows = [[_model(metrics, "fid", "psnr_ssim", "diversity"), _value(metrics, "fid", fid.get("value")), _value(metrics, "psnr_ssim", pairs.get("psnr")),
             _value(metrics, "psnr_ssim", pairs.get("ssim")), _value(metrics, "diversity", div.get("ms_ssim_within_label")),
             _value(metrics, "inception_score", score)]]
    return caption, header, rows


def table2(metrics: dict) -> tuple[str, list[str], list[list]]:
    auroc = metrics.get("auroc") or {}
    pathologies = list((_get(auroc, "generated", "per_pathology") or _get(auroc, "real", "per_pathology") or {}).keys())
    caption = (f"Table 2: AUROC, classifier {auroc.get('classifier', DASH)}; up to N={auroc.get('n', DASH)} positives vs N No Finding per pathology "
               "(each cell: AUROC (positives+/negatives−)).")
    header = ["Images", *pathologies, "Mean"]
    rows = []
    for source, label in (("generated", _model(metrics, "auroc")), ("real", "real test images")):
        block = auroc.get(source)
        if block:
            rows.append([label, *[_auroc_cell(block["per_pathology"][p]) for p in pathologies], block["mean"]])
    if not rows and _value(metrics, "auroc", None):
        rows.append([_model(metrics, "auroc"), _value(metrics, "auroc", None)])
        header = ["Images", "AUROC"]
    return caption, header, rows


def table3(metrics: dict) -> tuple[str, list[str], list[list]]:
    text, f1 = metrics.get("text") or {}, metrics.get("chexpert_f1") or {}
    caption = (f"Table 3: report quality vs {text.get('reference_section', DASH)} references "
               f"(n={text.get('n_reports', DASH)}; tokenizer {text.get('tokenizer', DASH)}); CheXpert F1 labeler {f1.get('labeler', DASH)}.")
    header = ["Model", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L (coco, β=1.2)", "ROUGE-L (rouge_score F, stemmed)", "CIDEr-D", "METEOR",
              "CheXpert F1 (micro, 14, positive only)", "CheXpert F1 (micro, 14, uncertain=positive)", "CheXpert F1 (macro, top 5, positive only)"]
    scores = [text.get(f"bleu{k}") for k in range(1, 5)] + [text.get("rougeL_coco"), text.get("rougeL_f_stem"), text.get("cider_d")]
    f1s = [_get(f1, "positive_only", "micro_14", "value"), _get(f1, "uncertain_as_positive", "micro_14", "value"), _get(f1, "positive_only", "macro_top5", "value")]
    meteor = text.get("meteor") if text.get("meteor") is not None or not text else "skipped: needs java on PATH (eval.text.meteor)"
    rows = [[_model(metrics, "text", "chexpert_f1"), *[_value(metrics, "text", v) for v in scores], meteor, *[_value(metrics, "chexpert_f1", v) for v in f1s]]]
    return caption, header, rows


def _f1_rows(name: str, block: dict | None) -> list[list]:
    rows = []
    for mapping in ("positive_only", "uncertain_as_positive"):
        for key in ("micro_14", "macro_14", "micro_top5", "macro_top5"):
            entry = _get(block, mapping, key)
            if entry:
                averaging, subset = key.split("_")
                ci = entry["ci95"]
                rows.append([name, mapping, averaging, subset, entry["value"], format_cell(ci[0]) + " – " + format_cell(ci[1]) if ci else DASH])
    return rows


def table4(metrics: dict) -> tuple[str, list[str], list[list]]:
    f1 = metrics.get("chexpert_f1") or {}
    caption = f"Table 4: CheXpert F1 of generated vs reference reports (labeler {f1.get('labeler', DASH)}; 95% bootstrap CI, {f1.get('n_bootstrap', DASH)} resamples)."
    header = ["Model", "uncertain mapping", "averaging", "labels", "F1", "95% CI"]
    rows = _f1_rows(metrics["model"], f1)
    if not rows and _value(metrics, "chexpert_f1", None):
        rows = [[metrics["model"], _value(metrics, "chexpert_f1", None), DASH, DASH, DASH, DASH]]
    return caption, header, rows


def table5(metrics: dict) -> tuple[str, list[str], list[list]]:
    guards, agree = metrics.get("guards") or {}, metrics.get("report_label_agreement") or {}
    caption = f"Table 5: report guards ({guards.get('copy_threshold', 'no training reports')}) and labels of generated reports vs their conditioning labels (micro F1, 14)."
    header = ["Model", "distinct reports share", "training-copy share", "label agreement F1 (positive only)", "label agreement F1 (uncertain=positive)"]
    rows = [[_model(metrics, "guards"), _value(metrics, "guards", guards.get("distinct_share")), _value(metrics, "guards", guards.get("copy_share")),
             _get(agree, "positive_only", "micro_14", "value"), _get(agree, "uncertain_as_positive", "micro_14", "value")]]
    return caption, header, rows


def table6(metrics: dict) -> tuple[str, list[str], list[list]]:
    kid, prdc, mem = metrics.get("kid") or {}, metrics.get("prdc") or {}, metrics.get("memorisation") or {}
    ssim, cosine = mem.get("ssim") or {}, mem.get("feature_cosine") or {}
    features = kid.get("feature_extractor") or prdc.get("feature_extractor") or mem.get("feature_extractor", DASH)
    caption = (f"Table 6: beyond the paper, on the FID features ({features}): KID (N gen={kid.get('n_generated', DASH)}, N real={kid.get('n_real', DASH)}), "
               f"precision/recall/density/coverage (N gen={prdc.get('n_generated', DASH)}, N real={prdc.get('n_real', DASH)}), "
               f"memorisation (N gen={mem.get('n_generated', DASH)} vs N train={mem.get('n_training', DASH)}).")
    header = [
        "Model",
        f"KID mean ({kid.get('subsets', DASH)} subsets of {kid.get('subset_size', DASH)})",
        "KID std",
        f"precision (k={prdc.get('k', DASH)})", "recall", "density", "coverage",
        f"memorised: SSIM > {ssim.get('threshold', DASH)} at {mem.get('ssim_resolution', DASH)} px (share (n))",
        "highest SSIM to a training image",
        f"feature cosine > {cosine.get('threshold', DASH)} (share (n))",
    ]
    share = lambda block: f"{format_cell(block['share_above'])} ({block['n_above']})" if block else None  # noqa: E731
    rows = [[_model(metrics, "kid", "prdc", "memorisation"), _value(metrics, "kid", kid.get("mean")), _value(metrics, "kid", kid.get("std")),
             *[_value(metrics, "prdc", prdc.get(k)) for k in ("precision", "recall", "density", "coverage")],
             _value(metrics, "memorisation", share(ssim)), _value(metrics, "memorisation", _get(ssim, "quantiles", "q100")),
             _value(metrics, "memorisation", share(cosine))]]
    return caption, header, rows


def _ci(entry: dict | None, key: str) -> str:
    """``value [low, high]`` of an entry with ``key`` and ``ci95`` (3 decimals), or ``–``."""
    if not entry:
        return "–"
    ci = entry.get("ci95")
    return f"{entry[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{entry[key]:.3f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)])


def utility_table(result: dict) -> str:
    """Markdown: one row per training set, AUROC [95% CI] per class and the mean."""
    from cxr_irgen.data.labels import CHEXPERT_LABELS

    classes = [c for c in CHEXPERT_LABELS if any(c in row["per_class"] for row in result["rows"])]
    header = ["training set", "real", "synthetic", *classes, "mean"]
    rows = [[row["training_set"], str(row["n_real"]), str(row["n_synthetic"]), *(_ci(row["per_class"].get(c), "auroc") for c in classes),
             _ci(row["mean"], "auroc")] for row in result["rows"]]
    note = (f"Downstream utility (images): classifier ({result['classifier']}, {result['resolution']} px, {result['steps']} steps, seed {result['seed']}) "
            f"trained on each set, AUROC on {result['n_test']} real test images, 95% bootstrap CI ({result['n_bootstrap']} draws).")
    return note + "\n\n" + _markdown(header, rows) + "\n"


def report_utility_table(result: dict) -> str:
    """Markdown: one row per training set of report generators (and the controls), BLEU / ROUGE-L / CheXpert F1 [95% CI]."""
    header = ["training set", "real pairs", "synthetic pairs", "BLEU-1", "BLEU-4", "ROUGE-L (coco)",
              "CheXpert F1 (micro, 14, positive only)", "CheXpert F1 (macro, top 5, positive only)"]
    rows = [[row["training_set"], str(row["n_real"]), str(row["n_synthetic"]), *(f"{row['text'][k]:.3f}" for k in ("bleu1", "bleu4", "rougeL_coco")),
             _ci(_get(row, "chexpert_f1", "positive_only", "micro_14"), "value"), _ci(_get(row, "chexpert_f1", "positive_only", "macro_top5"), "value")]
            for row in result["rows"]]
    note = (f"Downstream utility (reports): {result['generator']} ({result['steps']} steps, seed {result['seed']}) trained on each set of image/report "
            f"pairs, reports written for {result['n_test']} real test images and scored against their own {result['text']} "
            f"(labeler {result['labeler']}; 95% bootstrap CI, {result['n_bootstrap']} draws).")
    return note + "\n\n" + _markdown(header, rows) + "\n"


def table9(metrics: dict) -> tuple[str, list[str], list[list]]:
    per = metrics.get("per_pathology") or {}
    caption = (f"Table 9: per pathology, on the FID features ({per.get('feature_extractor', DASH)}, {per.get('resolution', DASH)} px): "
               f"generated vs real images positive for each label; labels with fewer than {per.get('min_n', DASH)} positives in either set show N only.")
    header = ["Model", "label", "N gen", "N real", "FID", "KID mean", "precision", "recall", "density", "coverage"]
    rows = []
    for label, entry in (per.get("labels") or {}).items():
        if entry.get("skipped"):
            rows.append([_model(metrics, "per_pathology"), label, entry["n_generated"], entry["n_real"], f"skipped: {entry['skipped']}", None, None, None, None, None])
            continue
        prdc = entry.get("prdc") or {}
        rows.append([_model(metrics, "per_pathology"), label, entry["n_generated"], entry["n_real"], _value(metrics, "per_pathology", entry["fid"]),
                     _value(metrics, "per_pathology", _get(entry, "kid", "mean")), *[_value(metrics, "per_pathology", prdc.get(k)) for k in ("precision", "recall", "density", "coverage")]])
    if not rows and _value(metrics, "per_pathology", None):
        rows = [[metrics["model"], _value(metrics, "per_pathology", None), *[None] * (len(header) - 2)]]
    return caption, header, rows


AGREEMENT_PAIRS = (("image_vs_requested", "classifier on image vs requested labels"), ("report_vs_requested", "labeler on report vs requested labels"),
                   ("image_vs_report", "classifier on image vs labeler on report"))


def table10(metrics: dict) -> tuple[str, list[str], list[list]]:
    agree = metrics.get("agreement") or {}
    labels = agree.get("labels") or []
    caption = (f"Table 10: agreement of generated image–report pairs (n={agree.get('n_pairs', DASH)}): classifier {agree.get('classifier', DASH)} "
               f"({agree.get('image_call', DASH)}), labeler {agree.get('labeler', DASH)} on the report, requested labels "
               f"({agree.get('report_and_request_labels', DASH)}); F1 symmetric, 95% bootstrap CI ({_get(agree, 'image_vs_report', 'n_bootstrap') or DASH} resamples).")
    header = ["Model", "pair", "micro F1", "macro F1", "accuracy", *[f"F1 {label}" for label in labels]]
    rows = [[metrics["model"], name, *[_ci(_get(agree, key, m), "value") if _get(agree, key, m, "value") is not None else DASH
                                       for m in ("micro_f1", "macro_f1", "accuracy")],
             *[_get(agree, key, "per_label", label, "f1") for label in labels]] for key, name in AGREEMENT_PAIRS if key in agree]
    if not rows and _value(metrics, "agreement", None):
        rows = [[metrics["model"], _value(metrics, "agreement", None), DASH, DASH, DASH]]
        header = header[:5]
    return caption, header, rows


TABLES = (table1, table2, table3, table4, table5, table6)
EXTRA_TABLES = ((9, table9), (10, table10))  # numbered after the utility tables 7 and 8


def _write_table(number: int, build, metrics: dict, out: Path) -> str:
    """Write ``table{number}.csv``; its markdown."""
    caption, header, rows = build(metrics)
    with open(out / f"table{number}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[DASH if v is None else v for v in row] for row in rows])
    return f"### {caption}\n\n" + _markdown(header, [[format_cell(v) for v in row] for row in rows] or [[DASH] * len(header)])


def write_tables(metrics: dict, out: Path) -> Path:
    """Write ``tables.md`` and ``table1.csv`` … ``table6.csv``, ``table9.csv``, ``table10.csv`` into ``out``, and the utility
    tables (7, 8) that ran into ``tables.md`` and ``utility.md`` / ``report_utility.md``; returns the markdown path."""
    parts = [_write_table(number, build, metrics, out) for number, build in enumerate(TABLES, 1)]
    for number, (key, build) in enumerate((("utility", utility_table), ("report_utility", report_utility_table)), len(TABLES) + 1):
        title = f"### Table {number}: downstream utility ({'images' if key == 'utility' else 'reports'})."
        reason = (metrics.get("skipped") or {}).get(key)
        if metrics.get(key):
            (out / f"{key}.md").write_text(build(metrics[key]))
            parts.append(f"{title}\n\n{build(metrics[key])}".rstrip())
        elif reason and reason != "not in eval.metrics":
            parts.append(f"{title}\n\nskipped: {reason}")
    parts += [_write_table(number, build, metrics, out) for number, build in EXTRA_TABLES]
    if metrics.get("privacy"):
        from cxr_irgen.eval.privacy import privacy_table

        parts.append(f"### {privacy_table(metrics['privacy'])}".rstrip())
    path = out / "tables.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path
