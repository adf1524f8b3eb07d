"""`cxr-irgen evaluate`: score generated images and reports against the real reference data.

Computes what applies to the inputs (``eval.metrics`` lists what may run):

===========  ==============================================  ====================================
metric       needs                                           against
===========  ==============================================  ====================================
fid          generated images                                ``eval.real.n`` real images (seeded)
kid, prdc    generated images (same features as fid)        the same real images
per_patholo. generated images with labels (same features)   the real images positive for each label
memorisation generated images                                ``eval.memorisation.n_train`` training images
utility      generated images with labels                    classifiers trained with them, on real test images
report_util. generated images with their generated reports  report generators trained with them, on real test images
psnr_ssim    generated images with labels                    a real image with the same labels
diversity    ≥ 2 generated images with the same labels       each other (MS-SSIM)
auroc        images with labels + ``eval.auroc.classifier``  the same protocol on real images
text         generated reports with a reference              BLEU / ROUGE-L / CIDEr-D / METEOR
chexpert_f1  generated reports with a reference              labels of the reference reports
guards       generated reports                               training reports (near copies)
agreement    generated images with their reports and labels  each other (classifier, labeler, request)
===========  ==============================================  ====================================

Reports that come with conditioning labels are also labelled and compared with them
(``report_label_agreement``). Real data: split ``eval.real.split`` (``test``), views
``eval.real.views`` of ``data``. Image work is batched and sharded across processes
under ``accelerate launch`` (each rank takes every world-th item; per-item results are
gathered before any metric is computed); text metrics run on the main process. Writes
``metrics.json`` (with ``provenance``: package versions, weights hashes, N, resolution, seeds),
``tables.md`` and ``table1.csv`` … ``table8.csv``.

The numbers come from the config-free functions of :mod:`cxr_irgen.eval.score`; this module
builds their inputs from the config (real data read once) and writes the outputs. A new
image metric is one entry in ``score.IMAGE_METRICS`` and one block in ``evaluate_images``,
plus a table in :mod:`cxr_irgen.eval.tables`.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from cxr_irgen.data.labels import CHEXPERT_LABELS, labels_from_row
from cxr_irgen.errors import UserError
from cxr_irgen.eval.score import FEATURE_METRICS, ImageSettings, store_result
from cxr_irgen.eval.score import IMAGE_METRICS as SCORED_IMAGE_METRICS
from cxr_irgen.eval.sources import ImageSource, process_state, shard_map  # noqa: F401  (shard_map: this module's sharding, tested)

log = logging.getLogger(__name__)

METRICS = ("fid", "kid", "prdc", "per_pathology", "memorisation", "privacy", "inception_score", "utility", "report_utility", "psnr_ssim", "diversity", "auroc", "text",
           "chexpert_f1", "guards", "agreement")
IMAGE_METRICS = set(SCORED_IMAGE_METRICS) | {"utility", "report_utility", "agreement"}


def drop_bad_images(table: pd.DataFrame, column: str) -> tuple[pd.DataFrame, list[dict]]:
    """``data.skip_bad``: the rows whose image decodes, and ``[{image, reason}]`` for the others."""
    from cxr_irgen.data.imageio import BadImageError, read_image

    bad = []
    for path in table[column]:
        try:
            read_image(path, 8)
        except BadImageError as err:
            bad.append({"image": str(path), "reason": str(err)})
    if bad:
        log.warning("skipped %d bad image(s) (data.skip_bad=true): %s", len(bad), ", ".join(b["image"] for b in bad))
    return table[~table[column].astype(str).isin({b["image"] for b in bad})].reset_index(drop=True), bad


def refuse_random_weights(cfg, wanted: set[str]) -> dict[str, str]:
    """One-line refusal of a metric from random weights, unless ``eval.allow_random_weights=true`` (then they are marked)."""
    from cxr_irgen.eval.score import random_weight_metrics, random_weights_error

    random = random_weight_metrics(str(cfg.eval.fid.features), cfg.eval.get("xrv_weights"), wanted, cfg.eval.fid.get("rad_dino"))
    if random and not cfg.eval.get("allow_random_weights", False):
        raise random_weights_error(*next(iter(random.items())))
    return random


def labels_matrix(table: pd.DataFrame) -> np.ndarray:
    """(N, 14) labels of a data table's CheXpert columns."""
    return np.stack([labels_from_row(r) for r in table[list(CHEXPERT_LABELS)].to_dict("records")]) if len(table) else np.zeros((0, 14), np.float32)


class RealData:
    """The real data of ``cfg.data``, its index table read once and shared by every metric."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._table: pd.DataFrame | None = None

    @property
    def table(self) -> pd.DataFrame:
        if self._table is None:
            from cxr_irgen.data.adapters import load_table

            self._table = load_table(self.cfg.data)
        return self._table

    def sections(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Report sections of the studies of ``rows``."""
        from cxr_irgen.data.adapters import load_sections

        return load_sections(rows, self.cfg.data)

    def with_images(self, splits, views=None) -> pd.DataFrame:
        """Rows of ``splits`` (and ``views``) that have an image."""
        table = self.table
        keep = table["split"].isin([str(s) for s in splits]) & (table["image_path"].fillna("") != "")
        if views is not None:
            keep &= table["view"].isin([str(v) for v in views])
        return table[keep].reset_index(drop=True)

    def reference(self) -> pd.DataFrame:
        """The real reference images: split ``eval.real.split``, views ``eval.real.views``."""
        cfg = self.cfg
        chosen = self.with_images([cfg.eval.real.split], cfg.eval.real.views)
        if chosen.empty:
            views = "/".join(str(v) for v in cfg.eval.real.views)
            raise UserError(f"no real {views} images in split {cfg.eval.real.split!r} of data={cfg.data.name} (root {cfg.data.get('root')}); "
                            "set eval.real.views / eval.real.split")
        return chosen


def _training_images(cfg, real: RealData, wanted: set[str]) -> list[str] | None:
    """The training images ``memorisation`` / ``privacy`` search: the larger of their ``n_train`` (seeded) of ``data``'s
    training split (None when neither is wanted)."""
    searched = [m for m in ("memorisation", "privacy") if m in wanted]
    if not searched:
        return None
    train = real.with_images(["train"])
    if len(train) < 2:
        raise UserError(f"eval.metrics has {searched[0]} but data={cfg.data.name} has fewer than two training images")
    sizes = [cfg.eval[m].n_train for m in searched]
    n_train = None if any(not n for n in sizes) else max(int(n) for n in sizes)
    if n_train and len(train) > n_train:
        train = train.iloc[np.sort(np.random.default_rng(int(cfg.eval.seed)).choice(len(train), n_train, replace=False))]
    return train["image_path"].tolist()


def _utility(cfg, real: RealData, images: pd.DataFrame, gen_labels: np.ndarray, labelled: np.ndarray) -> dict:
    """Classifiers trained on real / synthetic / real+synthetic images of ``data``, scored on its real test images."""
    from cxr_irgen.eval.utility import downstream_utility

    util = cfg.eval.utility
    real_train = real.with_images([util.train_split], util.views)
    if util.max_real:
        real_train = real_train.iloc[: int(util.max_real)]
    real_test = real.with_images([util.test_split], util.views)
    synthetic = pd.DataFrame(gen_labels[labelled], columns=list(CHEXPERT_LABELS)).assign(image_path=images["image"][labelled].tolist())
    return downstream_utility(real_train, synthetic, real_test, util, int(cfg.eval.seed))


def _report_utility(cfg, real: RealData, images: pd.DataFrame) -> dict | None:
    """Report generators trained on real / synthetic / real+synthetic image-report pairs, scored on real test images of ``data``."""
    from cxr_irgen.eval.report_utility import downstream_report_utility, real_pairs
    from cxr_irgen.text.labeler import labeler_kwargs, labeler_name

    util = cfg.eval.report_utility
    with_report = images[images["report"].fillna("").str.strip() != ""]
    if with_report.empty:
        return None
    sections = real.sections(real.table)
    real_train, real_test = (real_pairs(real.table, sections, str(split), util.views, str(util.text), 8) for split in (util.train_split, util.test_split))
    if util.max_real:
        real_train = real_train.iloc[: int(util.max_real)]
    synthetic = pd.DataFrame({"image_path": with_report["image"].tolist(), "text": with_report["report"].tolist()})
    return {**downstream_report_utility(real_train, synthetic, real_test, util, labeler_kwargs(cfg.labeler), int(cfg.eval.seed)),
            "labeler": labeler_name(cfg.labeler)}


def _reference_texts(cfg, reports: pd.DataFrame, real: RealData | None, real_index: pd.DataFrame | None) -> pd.Series:
    """The reference report of each generated report: given, or the real study's sections (by study_id or image path)."""
    section = str(cfg.eval.text.reference_section)
    if section not in ("findings", "impression", "findings+impression"):
        raise UserError(f"eval.text.reference_section={section!r}: use findings, impression or findings+impression")
    references = reports["reference"].copy()
    missing = references.isna()
    if missing.any() and real_index is not None:
        study_of_image = dict(zip(real_index["image_path"].map(lambda p: str(Path(p).resolve()) if p else ""), real_index["study_id"]))
        studies = reports["study_id"].where(reports["study_id"].notna(), reports["image"].map(study_of_image))
        sections = real.sections(real_index[real_index["study_id"].isin(set(studies.dropna()))]).set_index("study_id")
        text = {
            "findings": sections["findings"], "impression": sections["impression"],
            "findings+impression": (sections["findings"].fillna("") + " " + sections["impression"].fillna("")).str.strip(),
        }[section]
        references = references.where(~missing, studies.map(text))
    return references.where(references.fillna("").str.strip() != "")


def _training_reports(real: RealData) -> list[str] | None:
    from cxr_irgen.eval.report_guards import guard_texts

    train = real.table[real.table["split"] == "train"]
    return guard_texts(real.sections(train)) if not train.empty else None


def _report_metrics(cfg, reports: pd.DataFrame, real: RealData | None, real_index: pd.DataFrame | None) -> dict:
    """Text metrics, CheXpert F1, label agreement and guards of the generated reports (:func:`~cxr_irgen.eval.score.evaluate_reports`)."""
    from cxr_irgen.eval.score import REPORT_METRICS, evaluate_reports
    from cxr_irgen.text.labeler import labeler_kwargs

    wanted = set(cfg.eval.metrics)
    references = _reference_texts(cfg, reports, real, real_index) if wanted & {"text", "chexpert_f1"} else None
    meteor = str(cfg.eval.text.meteor)
    training = _training_reports(real) if "guards" in wanted and cfg.eval.guards.training_reports and real is not None else None
    return evaluate_reports(reports["report"].tolist(), references.tolist() if references is not None else None,
                            labeler=labeler_kwargs(cfg.labeler), metrics=[m for m in REPORT_METRICS if m in wanted],
                            conditioning_labels=reports["labels"].tolist(), training_reports=training,
                            guard_threshold=float(cfg.eval.guards.threshold),
                            meteor=meteor == "true" or (meteor == "auto" and shutil.which("java") is not None),
                            n_bootstrap=int(cfg.eval.chexpert_f1.n_bootstrap), seed=int(cfg.eval.seed),
                            reference_section=str(cfg.eval.text.reference_section))


def _feature_extractor(cfg, feature_module=None):
    """The extractor ``eval.fid.features`` names (a train-classifier run's DenseNet for ``classifier``)."""
    from cxr_irgen.eval.score import classifier_features, feature_extractor

    fid_cfg = cfg.eval.fid
    if str(fid_cfg.features) == "classifier":
        return classifier_features(fid_cfg.classifier)
    if str(fid_cfg.features) == "module":
        if feature_module is None:
            raise UserError("eval.fid.features=module needs a feature module passed from Python (evaluate(..., feature_module=...))")
        return feature_extractor(feature_module)
    return str(fid_cfg.features)


def _image_metrics(cfg, images: pd.DataFrame, real: RealData, real_all: pd.DataFrame, classifier, state, feature_module, results: dict) -> None:
    """Every image metric ``eval.metrics`` asks for: :func:`~cxr_irgen.eval.score.evaluate_images` on the generated
    images and ``eval.real.n`` seeded real images, then the downstream utilities."""
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.eval.score import evaluate_images, label_array

    wanted = set(cfg.eval.metrics)
    resolution = int(cfg.eval.resolution or read_image(images["image"].iloc[0]).shape[-1])
    labelled = images["labels"].notna().to_numpy()
    gen_labels = label_array(images["labels"].tolist(), len(images))
    rng = np.random.default_rng(int(cfg.eval.seed))
    n_real = min(int(cfg.eval.real.n), len(real_all))
    real_pick = real_all.iloc[np.sort(rng.choice(len(real_all), n_real, replace=False))].reset_index(drop=True)
    results["real"]["n_selected"] = n_real
    scored = [m for m in SCORED_IMAGE_METRICS if m in wanted]
    if scored:
        features = _feature_extractor(cfg, feature_module) if wanted & set(FEATURE_METRICS) else None
        out = evaluate_images(
            ImageSource(images["image"].tolist(), resolution), ImageSource(real_pick["image_path"].tolist(), resolution),
            labels=gen_labels, real_labels=labels_matrix(real_pick), features=features, classifier=classifier,
            xrv_weights=cfg.eval.get("xrv_weights"), inception_weights=cfg.eval.fid.get("inception_weights"),
            rad_dino=cfg.eval.fid.get("rad_dino"), inception_score_weights=cfg.eval.inception_score.get("weights"),
            training=_training_images(cfg, real, wanted),
            auroc_real=(real_all["image_path"].tolist(), labels_matrix(real_all)) if cfg.eval.auroc.real else None,
            settings=ImageSettings.from_cfg(cfg.eval), state=state)
        results["skipped"].update(out.pop("skipped"))
        for metric in ("memorisation", "privacy"):
            if metric in out:
                out[metric]["training_split"] = "train"
        results.update(out)
    if "utility" in wanted:
        results["utility"] = _utility(cfg, real, images, gen_labels, labelled)
    if "report_utility" in wanted:
        store_result(results, "report_utility", _report_utility(cfg, real, images), "no generated image comes with a generated report (generate mode=pairs writes them)")


def _agreement(cfg, images: pd.DataFrame, classifier, state) -> tuple[dict | None, str]:
    """Agreement of generated image–report pairs with their requested labels (:func:`~cxr_irgen.eval.score.evaluate_pairs`)."""
    from cxr_irgen.eval.score import evaluate_pairs
    from cxr_irgen.text.labeler import labeler_kwargs

    pairs = images[images["report"].notna() & images["labels"].notna()]
    if pairs.empty:
        return None, "no generated image comes with both a report and requested labels (a labels/prompt field and a report field)"
    if classifier is None:
        return None, "set eval.auroc.classifier=xrv (with eval.xrv_weights) or a train-classifier run dir (its calls on the images)"
    ag = cfg.eval.agreement
    return evaluate_pairs(pairs["image"].tolist(), pairs["report"].tolist(), pairs["labels"].tolist(), classifier=classifier,
                          labeler=labeler_kwargs(cfg.labeler), threshold=float(ag.threshold), n_bootstrap=int(ag.n_bootstrap),
                          seed=int(cfg.eval.seed), batch_size=int(cfg.eval.batch_size), state=state), ""


@dataclass
class Inputs:
    """What an evaluate call reads before any model: the config with its real data, and the generated items."""

    cfg: object
    generated: pd.DataFrame
    key: str = field(default="", repr=False)


_CHECKED: list[Inputs] = []  # the inputs check() read, reused by evaluate() on the same config (one entry)


def _inputs_key(cfg) -> str:
    """What the inputs depend on: their config keys and the modification times of the files named."""
    plain = lambda node: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node  # noqa: E731
    parts = {k: plain(cfg.get(k)) for k in ("generated", "generated_reports", "data", "labeler")}
    parts["eval"] = {k: plain(cfg.eval.get(k)) for k in ("text", "inputs")}
    paths = [cfg.get("generated"), cfg.get("generated_reports"), Path(str(cfg.get("generated") or ".")) / "pairs.jsonl",
             (cfg.eval.get("inputs") or {}).get("table")]
    parts["mtimes"] = [Path(str(p)).stat().st_mtime_ns if p and Path(str(p)).exists() else None for p in paths]
    return json.dumps(parts, sort_keys=True, default=str)


def load_inputs(cfg) -> Inputs:
    """The generated items of ``cfg`` (free-text prompts labelled) and ``cfg`` with its real data; read once per config."""
    from cxr_irgen.eval.generated import InputSpec, load_generated
    from cxr_irgen.text.labeler import labeler_kwargs, labeler_name

    key = _inputs_key(cfg)
    if _CHECKED and _CHECKED[0].key == key:
        return _CHECKED[0]
    spec = InputSpec.from_cfg(OmegaConf.to_container(cfg.eval.get("inputs") or {}, resolve=True))
    generated = load_generated(cfg.generated, cfg.get("generated_reports"), str(cfg.eval.text.report_column), str(cfg.eval.text.reference_column),
                               spec, labeler_kwargs(cfg.labeler), labeler_name(cfg.labeler))
    _CHECKED[:] = [Inputs(with_recorded_data(cfg), generated, key)]
    return _CHECKED[0]


def check(cfg) -> None:
    """The user errors of an evaluate call that show before any model is read: metric names, inputs, weight files."""
    unknown = set(cfg.eval.metrics) - set(METRICS)
    if unknown:
        raise UserError(f"eval.metrics: unknown {sorted(unknown)}; choose from {', '.join(METRICS)}")
    if "report_utility" in cfg.eval.metrics:
        from cxr_irgen.report_models.configs import report_model_config

        util = cfg.eval.report_utility
        try:
            report_model_config("encoder", str(util.encoder)), report_model_config("decoder", str(util.decoder))
        except UserError as err:
            raise UserError(f"eval.report_utility.{err}") from None
    for key in ("eval.xrv_weights", "eval.fid.inception_weights"):
        value = OmegaConf.select(cfg, key)
        if value and not Path(str(value)).is_file():
            raise UserError(f"{key}={value}: no such file")
    from cxr_irgen.vision.densenet import CLASSIFIER_CONFIG_FILE

    for key in ("eval.fid.classifier", "eval.auroc.classifier"):
        value = OmegaConf.select(cfg, key)
        if value and str(value) != "xrv" and not (Path(str(value)) / CLASSIFIER_CONFIG_FILE).is_file():
            raise UserError(f"{key}={value}: not a train-classifier run dir (no {CLASSIFIER_CONFIG_FILE})")
    load_inputs(cfg)


def with_recorded_data(cfg):
    """``cfg`` with ``data`` taken from the generate run's ``provenance.json`` (the vision run's data, else the report
    model's) when ``data.root`` is not given; explicit ``data.*`` wins."""
    if cfg.data.get("root") or cfg.data.get("csv"):
        return cfg
    provenance = Path(str(cfg.generated or "")) / "provenance.json"
    run = {}
    if cfg.generated and provenance.is_file():
        info = json.loads(provenance.read_text())
        run = info.get("vision") or info.get("language") or {}
    if not run.get("data_config"):
        raise UserError(f"data.root=... is needed: generated={cfg.generated} records no data (no provenance.json of a generate run) to take the real images from")
    plain = OmegaConf.to_container(cfg)
    plain["data"] = run["data_config"]
    log.info("real data from %s: data=%s root=%s", run["run"], run["data"], run["data_root"])
    return OmegaConf.create(plain)


def _labels_from(generated: pd.DataFrame) -> dict[str, int]:
    """How many generated items took their labels from where (labels field, template prompt, labeler on the prompt)."""
    return {str(k): int(v) for k, v in generated["labels_from"].dropna().value_counts().items()}


def provenance(cfg, results: dict, extractor_name: str | None) -> dict:
    """Package versions, extractor / classifier / labeler and sha256 of their weights, N per set, resolution, seeds."""
    from cxr_irgen.eval.features import installed_nvidia_inception
    from cxr_irgen.eval.provenance import package_versions, weights_hashes
    from cxr_irgen.text.labeler import labeler_name

    ev = cfg.eval
    features = str(ev.fid.features)
    feature_weights = {"xrv": ev.get("xrv_weights"), "classifier": ev.fid.get("classifier"), "rad_dino": ev.fid.get("rad_dino"),
                       "inception": ev.fid.get("inception_weights") or installed_nvidia_inception()}.get(features)
    classifier = ev.auroc.get("classifier")
    used = lambda *metrics: any(m in results for m in metrics)  # noqa: E731
    return {
        "packages": package_versions(),
        "feature_extractor": {"name": extractor_name, "weights_sha256": weights_hashes(feature_weights)} if extractor_name else None,
        "classifier": {"source": str(classifier), "weights_sha256": weights_hashes(ev.get("xrv_weights") if str(classifier) == "xrv" else classifier)}
        if classifier and used("auroc", "agreement") else None,
        "labeler": labeler_name(cfg.labeler) if used("text", "chexpert_f1", "report_label_agreement", "agreement") else None,
        "n": {"generated_images": results["generated"]["n_images"], "generated_reports": results["generated"]["n_reports"],
              "real_available": (results.get("real") or {}).get("n_available"), "real_selected": (results.get("real") or {}).get("n_selected")},
        "resolution": next((results[m]["resolution"] for m in ("fid", "kid", "prdc", "psnr_ssim", "diversity") if m in results), ev.get("resolution")),
        "seeds": {"eval.seed": int(ev.seed), "kid_subsets": int(ev.kid.subsets), "bootstrap": int(ev.chexpert_f1.n_bootstrap),
                  "agreement_bootstrap": int(ev.agreement.n_bootstrap)},
    }


def evaluate(cfg, feature_module: torch.nn.Module | None = None) -> dict:
    """Every applicable metric of ``cfg.generated`` / ``cfg.generated_reports`` as one dict (same on every rank)."""
    state = process_state()
    check(cfg)
    inputs = load_inputs(cfg)
    _CHECKED.clear()  # read once per call: the next call reads its files again
    cfg, generated = inputs.cfg, inputs.generated
    wanted = set(cfg.eval.metrics)
    images = generated[generated["image"] != ""].reset_index(drop=True)
    reports = generated[generated["report"].notna()].reset_index(drop=True)
    results: dict = {"model": str(cfg.model_name), "skipped": {},
                     "generated": {"source": str(cfg.generated), "n_images": len(images), "n_reports": len(reports), "labels_from": _labels_from(generated)}}
    real = RealData(cfg) if (len(images) and wanted & IMAGE_METRICS) or len(reports) else None
    real_all = real.reference() if real is not None else None
    if real_all is not None:
        results["real"] = {"data": str(cfg.data.name), "root": str(cfg.data.get("root")), "split": str(cfg.eval.real.split),
                           "views": [str(v) for v in cfg.eval.real.views], "n_available": len(real_all)}
        # reports written for real images (generate mode=reports) point at those images: not generated images
        is_real = images["image"].isin(set(real_all["image_path"].map(lambda p: str(Path(p).resolve()))))
        images = images[~is_real].reset_index(drop=True)
        results["generated"].update(n_images=len(images), n_real_images_not_scored=int(is_real.sum()))
    image_metrics = wanted & IMAGE_METRICS if len(images) else set()
    extractor_name = None
    if image_metrics:
        refuse_random_weights(cfg, image_metrics)
        real_images = real_all
        if cfg.data.get("skip_bad"):
            images, bad_generated = drop_bad_images(images, "image")
            real_images, bad_real = drop_bad_images(real_all, "image_path")
            results["skipped_images"] = {"generated": bad_generated, "real": bad_real, "n": len(bad_generated) + len(bad_real)}
        classifier = None
        if cfg.eval.auroc.classifier and image_metrics & {"auroc", "agreement"}:
            from cxr_irgen.eval.score import load_classifier_once

            classifier = load_classifier_once(str(cfg.eval.auroc.classifier), cfg.eval.get("xrv_weights"))  # one load for auroc and agreement
        _image_metrics(cfg, images, real, real_images, classifier, state, feature_module, results)
        if "agreement" in image_metrics:
            value, reason = _agreement(cfg, images, classifier, state)
            store_result(results, "agreement", value, reason)
        extractor_name = next((results[m]["feature_extractor"] for m in FEATURE_METRICS if m in results), None)
    if len(reports) and state.is_main_process:
        out = _report_metrics(cfg, reports, real, real.table if real is not None else None)  # any study of the data, not only eval.real's
        results["skipped"].update(out.pop("skipped"))
        results.update(out)
    for metric in METRICS:
        if metric not in results and metric not in results["skipped"]:
            results["skipped"][metric] = _not_run_reason(metric, wanted, len(images), len(reports))
    results["provenance"] = provenance(cfg, results, extractor_name)
    return results


def _not_run_reason(metric: str, wanted: set[str], n_images: int, n_reports: int) -> str:
    if metric not in wanted:
        return "not in eval.metrics"
    if metric in IMAGE_METRICS:
        return "no generated images" + (" (reports of real images are not scored as generated images)" if n_reports else "")
    return "no generated reports"


def run(cfg) -> None:
    """`cxr-irgen evaluate generated=DIR [generated_reports=CSV] data=phantom data.root=...`."""
    from cxr_irgen.eval.tables import write_tables
    from cxr_irgen.utils.rundir import run_dir

    results = evaluate(cfg)
    if not process_state().is_main_process:
        return
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=1, default=float))
    if results.get("memorisation"):
        from cxr_irgen.eval.memorisation import save_pairs_figure

        save_pairs_figure(results["memorisation"]["top_pairs"], out / "memorisation_pairs.png")
    if results.get("privacy"):
        from cxr_irgen.eval.privacy import save_privacy_sheet

        save_privacy_sheet(results["privacy"]["closest_pairs"], out / "privacy_pairs.png")
    tables = write_tables(results, out)
    print(tables.read_text())
    bad = results.get("skipped_images") or {}
    if bad.get("n"):
        print(f"skipped {bad['n']} bad image(s) (data.skip_bad=true): " + ", ".join(b["image"] for b in bad["generated"] + bad["real"]))
    print(f"metrics: {out / 'metrics.json'}")
