"""`cxr-irgen demo`: phantoms → train-vision → train-language autoencoder → train-classifier → train-language prior
(given the classifier as ``prior.classifier.source``, read when ``prior.input=classifier``) → generate pairs → evaluate
them → reports for real held-out test images → evaluate those reports
against the images' own reports, all under one run directory, on CPU in minutes.

Each step composes its own command config (the same files the CLI uses) with the demo's
overrides and its ``seed``, and writes to ``<run>/<NN-step>``. At the end the demo measures the
showcase figures (:func:`showcase_figures`: phantom signs of the generated images, classifier
AUROC generated vs real, report-vs-requested labels, repeated sentences, copies), prints them
against their targets, writes them to ``figures.json`` and renders ``gallery.html``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose

from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, label_key, parse_labels
from cxr_irgen.eval.tables import AGREEMENT_PAIRS
from cxr_irgen.utils.rundir import run_dir, start_run

log = logging.getLogger(__name__)

SPLIT_ORDER = ("test", "validate", "train")  # where the showcase takes its label vectors (and their real phantom) first
# The phantom sign each group shows (cxr_irgen.data.phantom_signs), measured against No Finding images.
SIGNS = (("heart_width_ratio", "Cardiomegaly"), ("costophrenic_blunting", "Pleural Effusion"), ("lung_brightness", "Lung Opacity"))
MIN_SIGN_IMAGES = 64  # issue 11: the heart-width AUROC counts only over >= 64 generated images on each side
# Issue 11's targets: (figure, comparison, bound).
TARGETS = {
    "heart_width_auroc": (">=", 0.9),
    "classifier_auroc_gap": ("<=", 0.05),
    "report_label_f1": (">=", 0.7),
    "repeated_sentence_share": ("<=", 0.05),
    "copy_share": ("<=", "control"),  # near copies of training reports: no more than the held-out real reports have
}


def _step(config: str, out: Path, overrides: list[str], task, timings: dict) -> Path:
    """Compose ``configs/<config>.yaml`` with ``overrides``, run ``task(cfg)`` into ``out``; returns ``out``."""
    cfg = compose(config, overrides=[*overrides, f"run_dir={out}"])
    start_run(cfg)
    started = time.perf_counter()
    print(f"\n=== {out.name}: {config} {' '.join(overrides)}", flush=True)
    task(cfg)
    timings[out.name] = round(time.perf_counter() - started, 1)
    print(f"=== {out.name} done in {timings[out.name]:.0f} s", flush=True)
    return out


def in_group(vec: np.ndarray, group: str) -> bool:
    """Whether a label vector belongs to a showcase group: the observation is 1; No Finding also without any positive finding."""
    from cxr_irgen.eval.auroc import no_finding_rows

    if group == "No Finding":
        return len(no_finding_rows(vec[None])[0]) == 1
    return vec[CHEXPERT_LABELS.index(group)] == 1.0


def showcase_plan(index: pd.DataFrame, groups: list[str], per_group: int, n: int) -> pd.DataFrame:
    """The label vectors to generate, ``n`` seeds each, so every group gets ≥ ``per_group`` images where the data allow.

    For each group in turn, distinct label vectors of PA phantoms in that group are added (test
    split first, then validate, then train; most frequent first) until the group holds
    ``per_group`` images (a vector counts for every group it belongs to). Each row keeps one
    real phantom with exactly those labels (``image_path``, ``split``) for the gallery.
    Columns: the 14 CheXpert labels, ``key``, ``groups``, ``image_path``, ``split``.
    """
    frontal = index[index["view"] == "PA"].copy()
    labels = frontal[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    frontal["key"] = [label_key(v) for v in labels]
    frontal["rank"] = frontal["split"].map({s: i for i, s in enumerate(SPLIT_ORDER)}).fillna(len(SPLIT_ORDER))
    frontal["count"] = frontal.groupby(["split", "key"])["key"].transform("size")
    frontal = frontal.sort_values(["rank", "count", "dicom_id"], ascending=[True, False, True], kind="stable")
    first = frontal.drop_duplicates("key")
    vectors = dict(zip(first["key"], first[list(CHEXPERT_LABELS)].to_numpy(np.float32)))
    chosen: list[str] = []
    counts = dict.fromkeys(groups, 0)
    for group in groups:
        for key in first["key"]:
            if counts[group] >= per_group:
                break
            if key in chosen or not in_group(vectors[key], group):
                continue
            chosen.append(key)
            for other in groups:
                counts[other] += n * in_group(vectors[key], other)
    plan = first.set_index("key").loc[chosen, [*CHEXPERT_LABELS, "image_path", "split"]].reset_index()
    plan.insert(1, "groups", [", ".join(g for g in groups if in_group(vectors[k], g)) for k in chosen])
    return plan


def link_test_images(root: Path, out: Path, limit: int) -> Path:
    """Symlink up to ``limit`` frontal test images (one per study with a report) into ``out``; returns ``out``."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.selections import language_stage2

    out.mkdir(parents=True, exist_ok=True)
    for path in language_stage2(load_index(root), "test")["image_path"].head(limit):
        link = out / Path(path).name
        if not link.exists():
            link.symlink_to(Path(path).resolve())
    return out


def sentences(report: str) -> list[str]:
    """The report's sentences, lower case, whitespace collapsed, without the final stop."""
    parts = re.split(r"(?<=[.!?])\s+|\.$", re.sub(r"\s+", " ", str(report).lower()).strip())
    return [p.strip(" .!?") for p in parts if p.strip(" .!?")]


def repeats_a_sentence(report: str) -> bool:
    """Whether any sentence occurs twice in ``report`` ("No pneumothorax. No pneumothorax.")."""
    said = sentences(report)
    return len(said) != len(set(said))


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """AUROC of finite ``positive`` vs ``negative`` scores; None when a side has none."""
    from cxr_irgen.eval.utility import rank_auroc

    positive, negative = positive[np.isfinite(positive)], negative[np.isfinite(negative)]
    if not len(positive) or not len(negative):
        return None
    return rank_auroc(np.r_[np.ones(len(positive), bool), np.zeros(len(negative), bool)], np.r_[positive, negative])


def sign_aurocs(images: list, labels: np.ndarray) -> dict:
    """Each phantom sign's AUROC, its group vs No Finding, over ``images`` ((H, W) arrays) with (N, 14) ``labels``.

    Returns ``{sign: {"group", "auroc", "n_positive", "n_no_finding", "n_unmeasured"}}``; an image whose
    chest the measure cannot find (NaN) is left out and counted.
    """
    from cxr_irgen.data import phantom_signs

    no_finding = np.array([in_group(v, "No Finding") for v in labels])
    out = {}
    for sign, group in SIGNS:
        members = np.array([in_group(v, group) for v in labels])
        wanted = np.flatnonzero(members | no_finding)
        values = np.full(len(labels), np.nan)
        values[wanted] = [getattr(phantom_signs, sign)(images[i]) for i in wanted]
        out[sign] = {"group": group, "auroc": _auroc(values[members], values[no_finding]), "n_positive": int(members.sum()),
                     "n_no_finding": int(no_finding.sum()), "n_unmeasured": int(np.isnan(values[wanted]).sum())}
    return out


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def real_copy_share(index: pd.DataFrame) -> dict:
    """The copy guard's control: the share of held-out real reports (test-split findings) that are near copies of a
    training report, i.e. what a generator writing real reports would score in this world."""
    from cxr_irgen.data.sections import load_report_sections
    from cxr_irgen.eval.report_guards import guard_texts, report_guards

    sections = load_report_sections(index)
    split = index.drop_duplicates("study_id").set_index("study_id")["split"]
    in_split = lambda name: sections[sections["study_id"].map(split).eq(name)]
    held_out = [t for t in in_split("test")["findings"].dropna() if t.strip()]
    guards = report_guards(held_out, guard_texts(in_split("train")))
    return {"copy_share": guards["copy_share"], "n_reports": len(held_out), "n_training_reports": guards["n_training_reports"]}


def shared_means(per_pathology: dict) -> tuple[float | None, float | None, list[str]]:
    """(generated mean, real mean, pathologies) of per-pathology AUROCs ``{name: {"generated": {...}, "real": {...}}}``
    over the pathologies scored on both sides: a pathology with no positive images on one side (no AUROC) would
    otherwise enter one mean and not the other."""
    shared = [k for k, v in per_pathology.items() if (v["generated"] or {}).get("auroc") is not None and (v["real"] or {}).get("auroc") is not None]
    if not shared:
        return None, None, []
    return tuple(float(np.mean([per_pathology[k][side]["auroc"] for k in shared])) for side in ("generated", "real")) + (shared,)


def showcase_figures(gen_dir: Path, pairs: list[dict], eval_dir: Path, real: pd.DataFrame) -> dict:
    """Issue 11's figures of one demo run, each with its counts; ``pairs``: the rows of ``gen_dir``'s pairs.jsonl;
    ``real``: PA phantoms (image_path + 14 labels).

    - ``signs``: phantom-sign AUROC of the generated images (group vs No Finding), and of ``real``.
    - ``classifier_auroc``: the demo classifier's AUROC on generated vs real test images (07-evaluate); both means (and
      so ``classifier_auroc_gap``) over the same ``pathologies``, those with an AUROC on both sides (:func:`shared_means`).
    - ``report_label_f1``: micro F1 (positive mentions) of each report's own labels vs the requested labels.
    - ``image_report_agreement``: micro F1 with its 95% CI of the three agreements of 07-evaluate's Table 10 (classifier
      on the image, labeler on the report, requested labels).
    - ``repeated_sentence_share``, ``distinct_share``, ``copy_share`` (near copies of training reports).
    """
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    gen_labels = np.stack([parse_labels(p["labels"]) for p in pairs])
    images = [_read_gray(gen_dir / p["image"]) for p in pairs]
    gen_signs = sign_aurocs(images, gen_labels)
    real_signs = sign_aurocs([_read_gray(Path(p)) for p in real["image_path"]], real[list(CHEXPERT_LABELS)].to_numpy(np.float32))
    auroc = metrics.get("auroc") or {}
    per_pathology = {k: {"generated": auroc["generated"]["per_pathology"][k], "real": auroc.get("real", {}).get("per_pathology", {}).get(k)}
                     for k in auroc.get("generated", {}).get("per_pathology", {})}
    gen_mean, real_mean, shared = shared_means(per_pathology)
    agreement = metrics.get("report_label_agreement", {}).get("positive_only", {}).get("micro_14", {})
    guards = metrics.get("guards", {})
    reports = [p["report"] for p in pairs]
    return {
        "n_pairs": len(pairs), "image_size": int(images[0].shape[0]) if images else None,
        "signs": {"generated": gen_signs, "real": real_signs, "real_images": f"{len(real)} PA phantoms of the demo's data"},
        "heart_width_auroc": gen_signs["heart_width_ratio"]["auroc"],
        "classifier_auroc": {"generated_mean": gen_mean, "real_mean": real_mean, "pathologies": shared, "per_pathology": per_pathology},
        "classifier_auroc_gap": None if gen_mean is None or real_mean is None else abs(real_mean - gen_mean),
        "report_label_f1": agreement.get("value"), "report_label_f1_ci95": agreement.get("ci95"),
        "image_report_agreement": {pair: (metrics.get("agreement") or {}).get(pair, {}).get("micro_f1") for pair, _ in AGREEMENT_PAIRS},
        "repeated_sentence_share": float(np.mean([repeats_a_sentence(r) for r in reports])) if reports else None,
        "distinct_share": guards.get("distinct_share"), "copy_share": guards.get("copy_share"),
        "decoding": _first_draw_decoding(pairs),
        "redrawn_share": float(np.mean([_redrawn(p) for p in pairs])) if pairs else None,
    }


def _redrawn(pair: dict) -> bool:
    """Whether the pair's report was drawn again because an earlier draw copied a training report."""
    decoding = pair.get("decoding") or {}
    return decoding.get("seed", pair.get("seed")) != pair.get("seed")


def _first_draw_decoding(pairs: list[dict]) -> dict | None:
    """The decoding the reports were written with: the record of a report kept at its first draw (a redrawn one records
    its own seed and freer top_p)."""
    kept = [p["decoding"] for p in pairs if p.get("decoding") and not _redrawn(p)]
    return (kept or [pairs[0].get("decoding")])[0] if pairs else None


def target_rows(figures: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, met) rows of the figures that have a target."""
    heart = figures["signs"]["generated"]["heart_width_ratio"]
    enough = min(heart["n_positive"], heart["n_no_finding"]) - heart["n_unmeasured"] >= MIN_SIGN_IMAGES
    rows = []
    for name, (op, bound) in TARGETS.items():
        value = figures.get(name)
        target = f"{op} {bound:g}" if bound != "control" else None
        if bound == "control":
            bound = (figures.get("copy_share_real_reports") or {}).get("copy_share")
            target = f"{op} held-out real reports ({'—' if bound is None else f'{bound:.3f}'})"
        met = value is not None and bound is not None and (value >= bound if op == ">=" else value <= bound) and (enough or name != "heart_width_auroc")
        shown = "—" if value is None else f"{value:.3f}"
        if name == "heart_width_auroc":
            shown += f" ({heart['n_positive']} vs {heart['n_no_finding']}{'' if enough else f', < {MIN_SIGN_IMAGES}'})"
        rows.append((name, shown, target, "yes" if met else "NO"))
    return rows


def print_figures(figures: dict) -> None:
    print(f"\nshowcase figures ({figures['n_pairs']} generated pairs at {figures['image_size']} px; figures.json):")
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    for sign, gen in figures["signs"]["generated"].items():
        real = figures["signs"]["real"][sign]
        print(f"  {sign:22s} {gen['group']} vs No Finding: AUROC generated {fmt(gen['auroc'])} ({gen['n_positive']} vs {gen['n_no_finding']}, "
              f"{gen['n_unmeasured']} unmeasured); real phantoms {fmt(real['auroc'])} ({real['n_positive']} vs {real['n_no_finding']})")
    real_f1 = figures.get("report_label_f1_real_images") or {}
    print(f"  report-label F1 of reports written for real test phantoms from the image alone (no labels given): {fmt(real_f1.get('value'))} "
          f"(n={real_f1.get('n_reports')})")
    c = figures["classifier_auroc"]
    print(f"  classifier mean AUROC over {', '.join(c['pathologies']) or 'no pathology scored on both sides'}: generated {fmt(c['generated_mean'])}, "
          f"real test phantoms {fmt(c['real_mean'])}")
    agreement = figures["image_report_agreement"]
    ci = lambda entry: "[{}, {}]".format(*map(fmt, entry["ci95"])) if entry and entry.get("ci95") else ""  # noqa: E731
    print("  image-report agreement, micro F1 [95% CI]: " + "; ".join(
        f"{what} {fmt((agreement[pair] or {}).get('value'))} {ci(agreement[pair])}" for pair, what in AGREEMENT_PAIRS))
    control = figures.get("copy_share_real_reports") or {}
    print(f"  distinct reports {fmt(figures['distinct_share'])}; near copies of a training report: generated {fmt(figures['copy_share'])}, "
          f"held-out real reports {fmt(control.get('copy_share'))} (n={control.get('n_reports')}, the control)")
    print(f"  {'figure':26s} {'value':>20s}  {'target':8s} met")
    for name, value, target, met in target_rows(figures):
        print(f"  {name:26s} {value:>20s}  {target:8s} {met}")


def own_reports(reports_dir: Path, index: pd.DataFrame) -> list[dict]:
    """The 08-reports rows with each image's own findings and labels (from the phantom index)."""
    from cxr_irgen.data.sections import load_report_sections

    rows = [json.loads(line) for line in (reports_dir / "pairs.jsonl").read_text().splitlines()]
    by_name = index.assign(name=index["image_path"].map(lambda p: Path(p).name)).set_index("name")
    studies = by_name.loc[[Path(r["image"]).name for r in rows]]
    sections = load_report_sections(studies.reset_index()).set_index("study_id")
    for row, (_, study) in zip(rows, studies.iterrows()):
        findings = sections["findings"].get(study["study_id"])
        row["own_report"] = findings if isinstance(findings, str) and findings.strip() else sections["impression"].get(study["study_id"])
        row["labels"] = format_labels(study[list(CHEXPERT_LABELS)].to_numpy(np.float32))
    return rows


def real_report_label_f1(rows: list[dict], seed: int) -> dict:
    """``report_label_f1`` for reports written from *real* held-out test phantoms alone (``own_reports`` rows; no label
    vector reaches the prior), against those images' own labels: what the language module reads from a real image."""
    from cxr_irgen.text.chexpert_f1 import chexpert_f1
    from cxr_irgen.text.labeler import label_reports

    truth = np.stack([parse_labels(row["labels"]) for row in rows])
    micro = chexpert_f1(label_reports([row["report"] for row in rows]), truth, n_bootstrap=200, seed=seed)["positive_only"]["micro_14"]
    return {"value": micro["value"], "ci95": micro["ci95"], "n_reports": len(rows)}


def run(cfg) -> None:
    from cxr_irgen import generate
    from cxr_irgen.data import phantoms
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.eval import classifier, evaluate
    from cxr_irgen.gallery import write_showcase
    from cxr_irgen.language import train as language_train
    from cxr_irgen.vision import train as vision_train

    out = run_dir(cfg)
    started = time.perf_counter()
    timings: dict = {}
    seeded = [f"seed={cfg.seed}"]
    p = cfg.phantoms
    if p.get("root"):
        data = Path(str(p.root)).resolve()
        print(f"\n=== phantoms: the existing tree {data} (phantoms.root)", flush=True)
    else:
        data = out / "phantoms"
        _step("make_phantoms", out / "01-phantoms", [f"out={data}", f"n={p.n}", f"size={p.size}", f"seed={cfg.seed}"], phantoms.run, timings)
    on_data = [f"data.root={data}", *seeded]
    vision_dir = _step("train_vision", out / "02-vision", [*on_data, *cfg.vision.overrides], vision_train.run, timings)
    ae_dir = _step("train_language", out / "03-language-autoencoder", [*on_data, *cfg.language.autoencoder_overrides], language_train.run, timings)
    clf_dir = _step("train_classifier", out / "04-classifier", [*on_data, *cfg.classifier.overrides], classifier.run, timings)
    prior_dir = _step("train_language", out / "05-language-prior",
                      [*on_data, f"autoencoder={ae_dir}", f"prior.classifier.source={clf_dir}", *cfg.language.prior_overrides], language_train.run, timings)
    index = load_index(data)
    g = cfg.generate
    plan = showcase_plan(index, list(g.groups), int(g.per_group), int(g.n))
    plan.to_csv(out / "showcase_plan.csv", index=False)
    labels_csv = out / "showcase_labels.csv"
    plan[list(CHEXPERT_LABELS)].to_csv(labels_csv, index=False)
    gen_dir = _step("generate", out / "06-generate",
                    [*on_data, f"labels_file={labels_csv}", f"n={g.n}", f"vision.checkpoint={vision_dir}",
                     f"language.checkpoint={prior_dir}", *g.overrides], generate.run, timings)
    on_classifier = [f"eval.auroc.classifier={clf_dir}", f"eval.fid.classifier={clf_dir}"]
    eval_dir = _step("evaluate", out / "07-evaluate",
                     [*on_data, f"generated={gen_dir}", *on_classifier, *cfg.evaluate.overrides], evaluate.run, timings)
    test_images = link_test_images(data, out / "test_images", cfg.reports.max_images)
    reports_dir = _step("generate", out / "08-reports",
                        [*on_data, "mode=reports", f"images_dir={test_images}", f"language.checkpoint={prior_dir}", *cfg.reports.overrides],
                        generate.run, timings)
    reports_eval_dir = _step("evaluate", out / "09-evaluate-reports",
                             [*on_data, f"generated={reports_dir}", *cfg.reports.evaluate_overrides], evaluate.run, timings)
    measuring = time.perf_counter()
    pairs = [json.loads(line) for line in (gen_dir / "pairs.jsonl").read_text().splitlines()]
    figures = showcase_figures(gen_dir, pairs, eval_dir, index[index["view"] == "PA"])
    figures["copy_share_real_reports"] = real_copy_share(index)
    real_rows = own_reports(reports_dir, index)
    figures["report_label_f1_real_images"] = real_report_label_f1(real_rows, int(cfg.seed))
    timings["figures"] = round(time.perf_counter() - measuring, 1)
    figures.update(seed=int(cfg.seed), timings=timings, wall_s=round(time.perf_counter() - started, 1))
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print_figures(figures)
    gallery = write_showcase(out, plan, pairs, int(g.n), index, real_rows, figures, target_rows(figures))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s (seed {cfg.seed})")
    print(f"tables (printed above by each evaluate step): {eval_dir / 'tables.md'} and {reports_eval_dir / 'tables.md'}")
    print(f"gallery: {gallery}")
    print(f"figures: {out / 'figures.json'}; metrics: {eval_dir / 'metrics.json'} and {reports_eval_dir / 'metrics.json'}")
