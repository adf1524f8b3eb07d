"""`cxr-irgen compare-reports`: every report generator on the same test images, one protocol, one table.

    cxr-irgen compare-reports data=mimic data.root=... split=test text=findings \\
        runs='[{path: runs/r2gen, paper: R2Gen}, {path: runs/repair, name: CXR-RePaiR-Select, decode: {select: true}}]'

A run entry is a path (a report run dir, a saved generator or a CXR-IRGen prior run) or
``{path, name, decode, paper}``: ``decode`` are that generator's decoding options
(``num_beams``, ``k``, ``select``, ...), ``paper`` names the CXR-IRGen paper's Tab. 3 row
shown beside it when the data is MIMIC-CXR (and only then), labelled as the paper's.

Protocol, the same for every row: the frontal test image of each study with the reference
section (``text``), references never truncated; BLEU-1..4 and ROUGE-L (pycocoevalcap
conventions) and CIDEr-D; one labeler for generated and reference reports; CheXpert F1
with the uncertain mapping and averaging named in each column, plus each paper's own F1
protocol (:mod:`cxr_irgen.eval.f1_presets`). Writes ``reports.csv`` (one column per row of
the table), ``compare.json``, ``compare.csv`` and ``compare.md`` in the run dir.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from cxr_irgen.errors import UserError
from cxr_irgen.eval.tables import DASH, _fmt

log = logging.getLogger(__name__)

# CXR-IRGen paper (Shentu & Al Moubayed, WACV 2024), Tab. 3: MIMIC-CXR test, their protocol and F1 variant.
PAPER_TAB3: dict[str, dict[str, float]] = {
    "R2Gen": {"bleu1": 0.287, "bleu4": 0.073, "rouge_l": 0.209, "f1": 0.172},
    "M2Trans": {"bleu1": 0.317, "bleu4": 0.073, "rouge_l": 0.225, "f1": 0.267},
    "CXR-RePaiR-2": {"bleu2": 0.069, "f1": 0.256},
    "CXR-RePaiR-Select": {"bleu2": 0.050, "f1": 0.274},
    "CXR-IRGen (F)": {"bleu1": 0.320, "bleu4": 0.067, "rouge_l": 0.208, "f1": 0.270},
    "CXR-IRGen (F+I)": {"f1": 0.293},
}

# (header, key path into a row's metrics); the paper's numbers go into the same BLEU/ROUGE columns and "F1 (paper)".
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("BLEU-1", ("text", "bleu1")),
    ("BLEU-2", ("text", "bleu2")),
    ("BLEU-3", ("text", "bleu3")),
    ("BLEU-4", ("text", "bleu4")),
    ("ROUGE-L (coco)", ("text", "rouge_l")),
    ("CIDEr-D", ("text", "cider_d")),
    ("F1 micro-14, -1→0", ("chexpert_f1", "positive_only", "micro_14", "value")),
    ("F1 macro-14, -1→0", ("chexpert_f1", "positive_only", "macro_14", "value")),
    ("F1 micro-top5, -1→1 [miura2021]", ("f1_presets", "miura2021", "micro_top5", "value")),
    ("F1 macro-14, -1→0, 10-boot mean [endo2021]", ("f1_presets", "endo2021", "macro_14", "value")),
    ("F1 (paper's, as printed)", ("paper", "f1")),
)


def _entries(runs) -> list[dict]:
    """Run entries as ``{path, name, decode, paper}``; a UserError for a bad entry, before any model loads."""
    from cxr_irgen.report_models.interface import GENERATOR_FILE, RUN_SUBDIR
    from cxr_irgen.report_models.language_adapter import is_prior_run

    runs = OmegaConf.to_container(runs, resolve=True) if OmegaConf.is_config(runs) else runs
    if not runs:
        raise UserError("runs=[] is empty: give report runs to compare, e.g. runs=[outputs/train_report_model/RUN,...]")
    entries = []
    for raw in runs:
        entry = {"path": raw} if isinstance(raw, str) else dict(raw)
        unknown = set(entry) - {"path", "name", "decode", "paper"}
        if "path" not in entry or unknown:
            raise UserError(f"run entry {raw!r}: give a path or {{path, name, decode, paper}} (unknown keys {sorted(unknown)})")
        path = Path(str(entry["path"]))
        if not (is_prior_run(path) or (path / GENERATOR_FILE).is_file() or (path / RUN_SUBDIR / GENERATOR_FILE).is_file()):
            raise UserError(f"{path} holds no report generator (report_generator.json, {RUN_SUBDIR}/ or a CXR-IRGen prior run)")
        if entry.get("paper") is not None and entry["paper"] not in PAPER_TAB3:
            raise UserError(f"paper={entry['paper']!r} in run entry {path}: use one of {', '.join(PAPER_TAB3)}")
        entries.append({"path": path, "name": str(entry.get("name") or path.name), "decode": dict(entry.get("decode") or {}), "paper": entry.get("paper")})
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise UserError(f"run names must differ (they name the table rows): {names}; give name= per entry")
    return entries


def comparison_pairs(cfg: DictConfig) -> pd.DataFrame:
    """The frontal test image/report pairs of ``cfg.split`` with the ``cfg.text`` reference (first ``max_images``)."""
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.selections import language_test, stage1_texts

    table = load_table(cfg.data)
    if cfg.split != "test":  # the selection reads the "test" split: relabel the asked one
        table = table.assign(split=np.where(table["split"] == str(cfg.split), "test", "other"))
    sections = load_sections(table[table["split"] == "test"], cfg.data)
    require = "findings" if str(cfg.text) == "findings" else "findings_or_impression"
    pairs = language_test(table, sections, require)
    # one whole reference per image: findings+impression is scored against the two sections joined
    variant = "findings_impression_concat" if str(cfg.text) == "findings+impression" else str(cfg.text)
    pairs = stage1_texts(pairs, variant).rename(columns={"text": "reference"})
    if cfg.max_images:
        pairs = pairs.iloc[: int(cfg.max_images)]
    if not len(pairs):
        raise UserError(f"no frontal {cfg.split} image has a {cfg.text} section under data.root: check data= and text=")
    return pairs


def _reports(generator, pairs: pd.DataFrame, batch_size: int, seed: int, decode: dict) -> list[str]:
    from cxr_irgen.data.imageio import read_image

    reports: list[str] = []
    for start in range(0, len(pairs), batch_size):
        paths = pairs["image_path"].iloc[start:start + batch_size]
        images = torch.stack([read_image(p, generator.image_size) for p in paths])
        reports += generator(images, batch_size=batch_size, seed=seed + start, **decode)
    return reports


def score(generated: list[str], references: list[str], reference_labels: np.ndarray, labeler: dict, n_bootstrap: int, seed: int) -> dict:
    """Text metrics, CheXpert F1 (both mappings, CIs) and every paper's F1 preset for one row."""
    from cxr_irgen.eval.chexpert_f1 import chexpert_f1
    from cxr_irgen.eval.f1_presets import all_presets
    from cxr_irgen.eval.labeler import label_reports
    from cxr_irgen.eval.text_metrics import text_metrics

    text = text_metrics(generated, references, with_meteor=False)
    text["rouge_l"] = text.pop("rougeL_coco")
    labels = label_reports(generated, **labeler)
    return {"text": text, "chexpert_f1": chexpert_f1(labels, reference_labels, n_bootstrap=n_bootstrap, seed=seed),
            "f1_presets": all_presets(labels, reference_labels, seed), "distinct_reports": len(set(generated))}


def _value(metrics: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def table_rows(results: list[dict], show_paper: bool) -> list[list]:
    """One row per measured generator, each followed by its paper row (when shown)."""
    rows = []
    for result in results:
        rows.append([result["name"], *[_value(result, keys) for _, keys in COLUMNS]])
        if show_paper and result.get("paper"):
            paper = PAPER_TAB3[result["paper"]]
            rows.append([f"{result['paper']} (paper's Tab. 3)", *[paper.get(keys[-1]) if keys[0] == "text" or keys[0] == "paper" else None for _, keys in COLUMNS]])
    return rows


def write_table(results: list[dict], protocol: dict, out: Path, show_paper: bool) -> Path:
    header = ["Generator", *[name for name, _ in COLUMNS]]
    rows = table_rows(results, show_paper)
    with open(out / "compare.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[DASH if v is None else v for v in row] for row in rows])
    caption = (f"Report generators on the same {protocol['n_images']} {protocol['split']} images of {protocol['data']} "
               f"(reference: {protocol['text']}, never truncated; labeler: {protocol['labeler']}; ROUGE-L β=1.2). "
               + ("Rows marked \"paper's Tab. 3\" are the CXR-IRGen paper's numbers on MIMIC-CXR under their own protocol, not measured here."
                  if show_paper else "The paper's numbers are not shown: this is not MIMIC-CXR."))
    lines = [f"### {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v, 3) for v in row) + " |" for row in rows]
    path = out / "compare.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(cfg: DictConfig) -> Path:
    """Generate, score and tabulate; returns the run dir."""
    from cxr_irgen.eval.labeler import label_reports, labeler_kwargs, labeler_name
    from cxr_irgen.report_models.interface import load_report_generator
    from cxr_irgen.utils.rundir import run_dir

    entries = _entries(cfg.runs)
    pairs = comparison_pairs(cfg)
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if str(cfg.device) == "auto" and torch.cuda.is_available() else ("cpu" if str(cfg.device) == "auto" else str(cfg.device)))
    labeler = labeler_kwargs(cfg.labeler)
    references = pairs["reference"].tolist()
    reference_labels = label_reports(references, **labeler)
    table = pairs[["dicom_id", "study_id"]].assign(reference=references)
    results = []
    for entry in entries:
        generator = load_report_generator(entry["path"]).to(device)
        log.info("%s: %s reports (%s)", entry["name"], len(pairs), generator.kind)
        generated = _reports(generator, pairs, int(cfg.batch_size), int(cfg.seed), entry["decode"])
        table[entry["name"]] = generated
        results.append({"name": entry["name"], "path": str(entry["path"]), "kind": generator.kind, "decode": entry["decode"], "paper": entry["paper"],
                        **score(generated, references, reference_labels, labeler, int(cfg.n_bootstrap), int(cfg.seed))})
        del generator
    show_paper = str(cfg.data.name) == "mimic"
    for result in results:
        if show_paper and result["paper"]:
            result["paper_tab3"] = PAPER_TAB3[result["paper"]]
    protocol = {"data": str(cfg.data.name), "split": str(cfg.split), "text": str(cfg.text), "n_images": len(pairs),
                "labeler": labeler_name(cfg.labeler), "n_bootstrap": int(cfg.n_bootstrap), "seed": int(cfg.seed), "references_truncated": False}
    table.to_csv(out / "reports.csv", index=False)
    (out / "compare.json").write_text(json.dumps({"protocol": protocol, "results": results}, indent=2, default=str))
    path = write_table(results, protocol, out, show_paper)
    log.info("comparison table: %s\n%s", path, path.read_text())
    return out
