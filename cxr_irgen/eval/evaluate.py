"""`cxr-irgen evaluate`: score generated images and reports against the real reference data.

Computes what applies to the inputs (``eval.metrics`` lists what may run):

===========  ==============================================  ====================================
metric       needs                                           against
===========  ==============================================  ====================================
fid          generated images                                ``eval.real.n`` real images (seeded)
kid, prdc    generated images (same features as fid)        the same real images
memorisation generated images                                ``eval.memorisation.n_train`` training images
utility      generated images with labels                    classifiers trained with them, on real test images
report_util. generated images with their generated reports  report generators trained with them, on real test images
psnr_ssim    generated images with labels                    a real image with the same labels
diversity    ≥ 2 generated images with the same labels       each other (MS-SSIM)
auroc        images with labels + ``eval.auroc.classifier``  the same protocol on real images
text         generated reports with a reference              BLEU / ROUGE-L / CIDEr-D / METEOR
chexpert_f1  generated reports with a reference              labels of the reference reports
guards       generated reports                               training reports (near copies)
===========  ==============================================  ====================================

Reports that come with conditioning labels are also labelled and compared with them
(``report_label_agreement``). Real data: split ``eval.real.split`` (``test``), views
``eval.real.views`` of ``data``. Image work is batched and sharded across processes
under ``accelerate launch`` (each rank takes every world-th item; per-item results are
gathered before any metric is computed); text metrics run on the main process. Writes
``metrics.json``, ``tables.md`` and ``table1.csv`` … ``table5.csv``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from cxr_irgen.data.labels import CHEXPERT_LABELS, label_key, labels_from_row
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

METRICS = ("fid", "kid", "prdc", "memorisation", "utility", "report_utility", "psnr_ssim", "diversity", "auroc", "text", "chexpert_f1", "guards")
FEATURE_METRICS = {"fid", "kid", "prdc"}
IMAGE_METRICS = FEATURE_METRICS | {"memorisation", "utility", "report_utility", "psnr_ssim", "diversity", "auroc"}


def run_shard(fn: Callable[[list[int]], Sequence], n_items: int, batch_size: int, desc: str, state) -> dict[int, object]:
    """``fn`` over this rank's item indices (every world-th, from its rank) in batches: ``{index: result}``."""
    from cxr_irgen.utils.progress import progress_bar

    mine = list(range(state.process_index, n_items, state.num_processes))
    results: dict[int, object] = {}
    with progress_bar(total=len(mine), desc=desc, disable=not state.is_main_process, dynamic_ncols=True) as bar:
        for start in range(0, len(mine), batch_size):
            batch = mine[start:start + batch_size]
            results.update(zip(batch, fn(batch)))
            bar.update(len(batch))
    return results


def shard_map(fn: Callable[[list[int]], Sequence], n_items: int, batch_size: int, desc: str, state) -> list:
    """:func:`run_shard` on every rank, gathered: the results of all items in item order (on every rank)."""
    from accelerate.utils import gather_object

    results = run_shard(fn, n_items, batch_size, desc, state)
    if state.num_processes > 1:
        merged: dict[int, object] = {}
        for part in gather_object([results]):
            merged.update(part)
        results = merged
    return [results[i] for i in range(n_items)]


class ImageSource:
    """Reads the images of a list of paths at one resolution: (B, 1, S, S) in [0, 1]."""

    def __init__(self, paths: Sequence[str], resolution: int):
        self.paths, self.resolution = list(paths), resolution

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        from cxr_irgen.data.imageio import BadImageError, read_image
        from cxr_irgen.eval.image_metrics import check_unit_images

        images = []
        for i in indices:
            try:
                images.append(check_unit_images(read_image(self.paths[i], self.resolution), str(self.paths[i])))
            except BadImageError as err:
                raise UserError(f"{err}; set data.skip_bad=true to skip (and count) bad images") from None
            except ValueError as err:
                raise UserError(str(err)) from None
        return torch.stack(images)


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


def random_weight_metrics(cfg, wanted: set[str]) -> dict[str, str]:
    """``{metric: what has random weights}`` for the image metrics ``wanted`` would compute with a randomly initialised network."""
    if str(cfg.eval.fid.features) != "xrv" or cfg.eval.get("xrv_weights"):
        return {}
    on_fid_features = ("fid", "kid", "prdc", "memorisation")  # every metric on the FID extractor's features
    return {metric: "XRV DenseNet-121 feature extractor with random weights (eval.xrv_weights unset)"
            for metric in on_fid_features if metric in wanted}


def refuse_random_weights(cfg, wanted: set[str]) -> dict[str, str]:
    """One-line refusal of a metric from random weights, unless ``eval.allow_random_weights=true`` (then they are marked)."""
    random = random_weight_metrics(cfg, wanted)
    if random and not cfg.eval.get("allow_random_weights", False):
        metric, what = next(iter(random.items()))
        raise UserError(f"{metric} would come from a {what}: set eval.xrv_weights=/path/densenet121-res224-all.pt "
                        "(or eval.fid.features=classifier eval.fid.classifier=TRAIN_CLASSIFIER_RUN, or drop it from eval.metrics); "
                        "eval.allow_random_weights=true computes it anyway, marked, for smoke tests")
    return random


def _labels_matrix(table: pd.DataFrame) -> np.ndarray:
    return np.stack([labels_from_row(r) for r in table[list(CHEXPERT_LABELS)].to_dict("records")]) if len(table) else np.zeros((0, 14), np.float32)


def _real_table(cfg) -> pd.DataFrame:
    from cxr_irgen.data.adapters import load_table

    table = load_table(cfg.data)
    views = [str(v) for v in cfg.eval.real.views]
    chosen = table[(table["split"] == str(cfg.eval.real.split)) & table["view"].isin(views) & (table["image_path"].fillna("") != "")]
    if chosen.empty:
        raise UserError(f"no real {'/'.join(views)} images in split {cfg.eval.real.split!r} of data={cfg.data.name} (root {cfg.data.get('root')}); set eval.real.views / eval.real.split")
    return chosen.reset_index(drop=True)


def _extractor(cfg, state, feature_module=None):
    from cxr_irgen.eval.features import XRVFeatures, build_feature_extractor

    fid_cfg = cfg.eval.fid
    if str(fid_cfg.features) == "classifier":
        from cxr_irgen.eval.classifier import Classifier

        clf = Classifier.from_run_dir(fid_cfg.classifier)
        extractor = XRVFeatures(model=clf.model, resolution=clf.resolution)
        extractor.name = f"{clf.name} features2 ({clf.resolution}px)"
    else:
        extractor = build_feature_extractor(fid_cfg, cfg.eval.get("xrv_weights"), feature_module)
    return extractor.to(state.device).eval()


def _embed(extractor, source: ImageSource, cfg, state, desc: str) -> np.ndarray:
    """(N, D) features of every image of ``source``."""
    fn = lambda idx: list(extractor(source.load(idx).to(state.device)).double().cpu().numpy())
    return np.stack(shard_map(fn, len(source.paths), int(cfg.eval.batch_size), desc, state))


def _feature_metrics(cfg, extractor, gen: ImageSource, real: ImageSource, state, results: dict) -> None:
    """FID, KID, precision/recall/density/coverage and memorisation from the same extractor's features, as ``eval.metrics`` asks."""
    from cxr_irgen.eval.image_metrics import fid_from_features
    from cxr_irgen.eval.kid import kid_from_features
    from cxr_irgen.eval.prdc import prdc_from_features

    wanted = set(cfg.eval.metrics)
    gen_features = _embed(extractor, gen, cfg, state, "features: generated")
    if "memorisation" in wanted:
        results["memorisation"] = _memorisation(cfg, extractor, gen, gen_features, state)
    if not wanted & FEATURE_METRICS:
        return
    real_features = _embed(extractor, real, cfg, state, "features: real")
    described = {"feature_extractor": extractor.name, "n_generated": len(gen_features), "n_real": len(real_features), "resolution": gen.resolution}
    if "fid" in wanted:
        results["fid"] = {"value": fid_from_features(gen_features, real_features), **described}
    smaller = min(len(gen_features), len(real_features))
    if "kid" in wanted:
        size = min(int(cfg.eval.kid.subset_size), smaller)  # torch-fidelity refuses a larger subset; the size used is recorded
        _store(results, "kid", {**kid_from_features(gen_features, real_features, size, int(cfg.eval.kid.subsets), int(cfg.eval.seed)), **described}
               if size >= 2 else None, "KID needs at least 2 generated and 2 real images")
    if "prdc" in wanted:
        k = int(cfg.eval.prdc.k)
        _store(results, "prdc", {**prdc_from_features(gen_features, real_features, k), **described} if smaller > k else None,
               f"precision/recall/density/coverage with k={k} need more than {k} generated and real images")


def _memorisation(cfg, extractor, gen: ImageSource, gen_features: np.ndarray, state) -> dict:
    """Nearest of ``eval.memorisation.n_train`` (seeded) training images of ``data`` to each generated image."""
    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.eval.memorisation import nearest_training_images

    mem = cfg.eval.memorisation
    table = load_table(cfg.data)
    train = table[(table["split"] == "train") & (table["image_path"].fillna("") != "")].reset_index(drop=True)
    if train.empty:
        raise UserError(f"eval.metrics has memorisation but data={cfg.data.name} has no training images")
    if mem.n_train and len(train) > int(mem.n_train):
        train = train.iloc[np.sort(np.random.default_rng(int(cfg.eval.seed)).choice(len(train), int(mem.n_train), replace=False))]
    training = ImageSource(train["image_path"].tolist(), gen.resolution)
    train_features = _embed(extractor, training, cfg, state, "memorisation: training features")
    small = lambda source: ImageSource(source.paths, int(mem.ssim_resolution)).load(range(len(source.paths)))
    out = nearest_training_images(gen_features, train_features, small(gen), small(training), gen.paths, training.paths,
                                  float(mem.cosine_threshold), float(mem.ssim_threshold), int(mem.top))
    return {**out, "feature_extractor": extractor.name, "training_split": "train"}


def _utility(cfg, images: pd.DataFrame, gen_labels: np.ndarray, labelled: np.ndarray) -> dict:
    """Classifiers trained on real / synthetic / real+synthetic images of ``data``, scored on its real test images."""
    from cxr_irgen.data.adapters import load_table
    from cxr_irgen.eval.utility import downstream_utility

    util = cfg.eval.utility
    table = load_table(cfg.data)
    frontal = table[table["view"].isin([str(v) for v in util.views]) & (table["image_path"].fillna("") != "")]
    real_train = frontal[frontal["split"] == str(util.train_split)].reset_index(drop=True)
    if util.max_real:
        real_train = real_train.iloc[: int(util.max_real)]
    real_test = frontal[frontal["split"] == str(util.test_split)].reset_index(drop=True)
    synthetic = pd.DataFrame(gen_labels[labelled], columns=list(CHEXPERT_LABELS)).assign(image_path=images["image"][labelled].tolist())
    return downstream_utility(real_train, synthetic, real_test, util, int(cfg.eval.seed))


def _report_utility(cfg, images: pd.DataFrame) -> dict | None:
    """Report generators trained on real / synthetic / real+synthetic image-report pairs, scored on real test images of ``data``."""
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.eval.labeler import labeler_kwargs, labeler_name
    from cxr_irgen.eval.report_utility import downstream_report_utility, real_pairs

    util = cfg.eval.report_utility
    with_report = images[images["report"].fillna("").str.strip() != ""]
    if with_report.empty:
        return None
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    real_train, real_test = (real_pairs(table, sections, str(split), util.views, str(util.text), 8) for split in (util.train_split, util.test_split))
    if util.max_real:
        real_train = real_train.iloc[: int(util.max_real)]
    synthetic = pd.DataFrame({"image_path": with_report["image"].tolist(), "text": with_report["report"].tolist()})
    return {**downstream_report_utility(real_train, synthetic, real_test, util, labeler_kwargs(cfg.labeler), int(cfg.eval.seed)),
            "labeler": labeler_name(cfg.labeler)}


def _psnr_ssim(cfg, gen: ImageSource, gen_keys: list[str], real: ImageSource, real_keys: list[str], state) -> dict | None:
    from cxr_irgen.eval.image_metrics import pair_by_label, psnr, ssim

    pairs = pair_by_label(gen_keys, real_keys, int(cfg.eval.seed))
    if not pairs:
        return None

    def score(idx):
        a, b = gen.load([pairs[i][0] for i in idx]), real.load([pairs[i][1] for i in idx])
        return list(zip(psnr(a, b).tolist(), ssim(a, b).tolist()))

    values = np.array(shard_map(score, len(pairs), int(cfg.eval.batch_size), "psnr/ssim", state))
    return {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean()), "n_pairs": len(pairs), "n_unpaired": len(gen_keys) - len(pairs),
            "pairing": "same full label vector; real partner drawn at random (eval.seed)", "resolution": gen.resolution}


def _diversity(cfg, gen: ImageSource, gen_keys: list[str], state) -> dict | None:
    from cxr_irgen.eval.image_metrics import ms_ssim, ms_ssim_scales, within_label_pairs

    pairs = within_label_pairs(gen_keys, int(cfg.eval.diversity.max_pairs_per_label), int(cfg.eval.seed))
    if not pairs:
        return None

    def score(idx):
        return ms_ssim(gen.load([pairs[i][0] for i in idx]), gen.load([pairs[i][1] for i in idx])).tolist()

    values = shard_map(score, len(pairs), int(cfg.eval.batch_size), "ms-ssim diversity", state)
    return {"ms_ssim_within_label": float(np.mean(values)), "n_pairs": len(pairs), "n_labels": len({gen_keys[i] for i, _ in pairs}),
            "scales": ms_ssim_scales(gen.resolution), "resolution": gen.resolution}


def _auroc_block(classifier, source: ImageSource, labels: np.ndarray, cfg, state, desc: str) -> dict:
    from cxr_irgen.eval.auroc import needed_indices, no_finding_rows, protocol_auroc, protocol_groups

    groups = protocol_groups(labels, list(cfg.eval.auroc.pathologies), int(cfg.eval.auroc.n), int(cfg.eval.seed))
    indices = needed_indices(groups)
    logits = shard_map(lambda idx: list(classifier.logits(source.load([int(indices[i]) for i in idx])).numpy()),
                       len(indices), int(cfg.eval.batch_size), desc, state)
    return {**protocol_auroc(dict(zip(indices.tolist(), logits)), groups, classifier.pathologies),
            "n_no_finding_conflicting": no_finding_rows(labels)[1]}


def _auroc(cfg, gen: ImageSource, gen_labels: np.ndarray, real_all: pd.DataFrame | None, state) -> dict:
    from cxr_irgen.eval.classifier import load_classifier

    classifier = load_classifier(str(cfg.eval.auroc.classifier), cfg.eval.get("xrv_weights"))
    classifier.model.to(state.device)
    out = {"classifier": classifier.name, "n": int(cfg.eval.auroc.n), "resolution": classifier.resolution,
           "generated": _auroc_block(classifier, gen, gen_labels, cfg, state, "auroc: generated")}
    if cfg.eval.auroc.real and real_all is not None:
        real = ImageSource(real_all["image_path"].tolist(), classifier.resolution)
        out["real"] = _auroc_block(classifier, real, _labels_matrix(real_all), cfg, state, "auroc: real")
    return out


def _reference_texts(cfg, reports: pd.DataFrame, real_index: pd.DataFrame | None) -> pd.Series:
    """The reference report of each generated report: given, or the real study's sections (by study_id or image path)."""
    section = str(cfg.eval.text.reference_section)
    if section not in ("findings", "impression", "findings+impression"):
        raise UserError(f"eval.text.reference_section={section!r}: use findings, impression or findings+impression")
    references = reports["reference"].copy()
    missing = references.isna()
    if missing.any() and real_index is not None:
        from cxr_irgen.data.adapters import load_sections

        study_of_image = dict(zip(real_index["image_path"].map(lambda p: str(Path(p).resolve()) if p else ""), real_index["study_id"]))
        studies = reports["study_id"].where(reports["study_id"].notna(), reports["image"].map(study_of_image))
        sections = load_sections(real_index[real_index["study_id"].isin(set(studies.dropna()))], cfg.data).set_index("study_id")
        text = {
            "findings": sections["findings"], "impression": sections["impression"],
            "findings+impression": (sections["findings"].fillna("") + " " + sections["impression"].fillna("")).str.strip(),
        }[section]
        looked_up = studies.map(text)
        references = references.where(~missing, looked_up)
    return references.where(references.fillna("").str.strip() != "")


def _text_metrics(cfg, reports: pd.DataFrame, real_index: pd.DataFrame | None, results: dict) -> None:
    from cxr_irgen.eval.chexpert_f1 import chexpert_f1
    from cxr_irgen.eval.labeler import label_reports, labeler_kwargs, labeler_name
    from cxr_irgen.eval.text_metrics import text_metrics

    wanted = set(cfg.eval.metrics)
    labeler = labeler_kwargs(cfg.labeler)
    n_boot, seed = int(cfg.eval.chexpert_f1.n_bootstrap), int(cfg.eval.seed)
    conditioned = reports[reports["labels"].notna()]
    if len(conditioned) and "chexpert_f1" in wanted:
        own = label_reports(conditioned["report"].tolist(), **labeler)
        results["report_label_agreement"] = {"labeler": labeler_name(cfg.labeler), **chexpert_f1(own, np.stack(conditioned["labels"].tolist()), n_bootstrap=n_boot, seed=seed)}
    references = _reference_texts(cfg, reports, real_index) if wanted & {"text", "chexpert_f1"} else None
    scored = reports[references.notna()] if references is not None else reports.iloc[:0]
    if len(scored):
        hyps, refs = scored["report"].tolist(), references[references.notna()].tolist()
        if "text" in wanted:
            meteor = str(cfg.eval.text.meteor)
            with_meteor = meteor == "true" or (meteor == "auto" and shutil.which("java") is not None)
            results["text"] = {**text_metrics(hyps, refs, with_meteor=with_meteor), "reference_section": str(cfg.eval.text.reference_section)}
        if "chexpert_f1" in wanted:
            generated_labels, reference_labels = label_reports(hyps, **labeler), label_reports(refs, **labeler)
            results["chexpert_f1"] = {"labeler": labeler_name(cfg.labeler), **chexpert_f1(generated_labels, reference_labels, n_bootstrap=n_boot, seed=seed)}
    else:
        for metric in wanted & {"text", "chexpert_f1"}:
            results["skipped"][metric] = "no generated report has a reference (give generated_reports=CSV with a reference column, or reports of real test images)"
    if "guards" in wanted:
        from cxr_irgen.eval.report_guards import report_guards

        training = _training_reports(cfg) if cfg.eval.guards.training_reports else None
        results["guards"] = report_guards(reports["report"].tolist(), training, float(cfg.eval.guards.threshold))


def _training_reports(cfg) -> list[str] | None:
    from cxr_irgen.data.adapters import load_sections, load_table

    table = load_table(cfg.data)
    train = table[table["split"] == "train"]
    if train.empty:
        return None
    from cxr_irgen.eval.report_guards import guard_texts

    return guard_texts(load_sections(train, cfg.data))


def _store(results: dict, key: str, value: dict | None, reason: str) -> None:
    if value is None:
        results["skipped"][key] = reason
    else:
        results[key] = value


def _image_metrics(cfg, images: pd.DataFrame, real_all: pd.DataFrame, state, feature_module, results: dict) -> None:
    """FID, PSNR/SSIM, MS-SSIM diversity and AUROC of the generated images, as ``eval.metrics`` asks."""
    from cxr_irgen.data.imageio import read_image

    wanted = set(cfg.eval.metrics)
    resolution = int(cfg.eval.resolution or read_image(images["image"].iloc[0]).shape[-1])
    gen = ImageSource(images["image"].tolist(), resolution)
    labelled = images["labels"].notna().to_numpy()
    gen_labels = np.stack([l if l is not None else np.full(14, np.nan, np.float32) for l in images["labels"]])
    gen_keys = [label_key(l) if ok else f"unlabelled-{i}" for i, (l, ok) in enumerate(zip(gen_labels, labelled))]
    rng = np.random.default_rng(int(cfg.eval.seed))
    n_real = min(int(cfg.eval.real.n), len(real_all))
    real_pick = real_all.iloc[np.sort(rng.choice(len(real_all), n_real, replace=False))].reset_index(drop=True)
    real = ImageSource(real_pick["image_path"].tolist(), resolution)
    real_keys = [label_key(l) for l in _labels_matrix(real_pick)]
    results["real"]["n_selected"] = n_real
    if wanted & (FEATURE_METRICS | {"memorisation"}):
        _feature_metrics(cfg, _extractor(cfg, state, feature_module), gen, real, state, results)
    if "psnr_ssim" in wanted:
        _store(results, "psnr_ssim", _psnr_ssim(cfg, gen, gen_keys, real, real_keys, state), "no generated label vector occurs among the real images")
    if "diversity" in wanted:
        _store(results, "diversity", _diversity(cfg, gen, gen_keys, state), "no two generated images share a label vector")
    if "utility" in wanted:
        results["utility"] = _utility(cfg, images, gen_labels, labelled)
    if "report_utility" in wanted:
        _store(results, "report_utility", _report_utility(cfg, images), "no generated image comes with a generated report (generate mode=pairs writes them)")
    if "auroc" in wanted:
        has_classifier = bool(cfg.eval.auroc.classifier)
        _store(results, "auroc", _auroc(cfg, gen, gen_labels, real_all, state) if has_classifier else None,
               "set eval.auroc.classifier=xrv (with eval.xrv_weights) or a train-classifier run dir")


def check(cfg) -> None:
    """The user errors of an evaluate call that show before any data or model is read: metric names, inputs, weight files."""
    from cxr_irgen.eval.generated import load_generated

    unknown = set(cfg.eval.metrics) - set(METRICS)
    if unknown:
        raise UserError(f"eval.metrics: unknown {sorted(unknown)}; choose from {', '.join(METRICS)}")
    load_generated(cfg.generated, cfg.get("generated_reports"), str(cfg.eval.text.report_column), str(cfg.eval.text.reference_column))
    if "report_utility" in cfg.eval.metrics:
        from cxr_irgen.report_models.decoders import decoder_config
        from cxr_irgen.report_models.encoders import model_config

        util = cfg.eval.report_utility
        try:
            model_config("encoder", str(util.encoder)), decoder_config(str(util.decoder))
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
    with_recorded_data(cfg)


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


def evaluate(cfg, feature_module: torch.nn.Module | None = None) -> dict:
    """Every applicable metric of ``cfg.generated`` / ``cfg.generated_reports`` as one dict (same on every rank)."""
    from accelerate import PartialState

    from cxr_irgen.eval.generated import load_generated

    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True, CPU processes under torchrun would not shard
    check(cfg)
    cfg = with_recorded_data(cfg)
    wanted = set(cfg.eval.metrics)
    generated = load_generated(cfg.generated, cfg.get("generated_reports"), str(cfg.eval.text.report_column), str(cfg.eval.text.reference_column))
    images = generated[generated["image"] != ""].reset_index(drop=True)
    reports = generated[generated["report"].notna()].reset_index(drop=True)
    results: dict = {"model": str(cfg.model_name), "skipped": {},
                     "generated": {"source": str(cfg.generated), "n_images": len(images), "n_reports": len(reports)}}
    real_all = _real_table(cfg) if (len(images) and wanted & IMAGE_METRICS) or len(reports) else None
    if real_all is not None:
        results["real"] = {"data": str(cfg.data.name), "root": str(cfg.data.get("root")), "split": str(cfg.eval.real.split),
                           "views": [str(v) for v in cfg.eval.real.views], "n_available": len(real_all)}
        # reports written for real images (generate mode=reports) point at those images: not generated images
        is_real = images["image"].isin(set(real_all["image_path"].map(lambda p: str(Path(p).resolve()))))
        images = images[~is_real].reset_index(drop=True)
        results["generated"].update(n_images=len(images), n_real_images_not_scored=int(is_real.sum()))
    image_metrics = wanted & IMAGE_METRICS if len(images) else set()
    if image_metrics:
        random = refuse_random_weights(cfg, image_metrics)
        real_images = real_all
        if cfg.data.get("skip_bad"):
            images, bad_generated = drop_bad_images(images, "image")
            real_images, bad_real = drop_bad_images(real_all, "image_path")
            results["skipped_images"] = {"generated": bad_generated, "real": bad_real, "n": len(bad_generated) + len(bad_real)}
        _image_metrics(cfg, images, real_images, state, feature_module, results)
        for metric, what in random.items():
            if metric in results:
                results[metric]["random_weights"] = what
    if len(reports) and state.is_main_process:
        _text_metrics(cfg, reports, real_all, results)
    for metric in METRICS:
        if metric not in results and metric not in results["skipped"]:
            results["skipped"][metric] = _not_run_reason(metric, wanted, len(images), len(reports))
    return results


def _not_run_reason(metric: str, wanted: set[str], n_images: int, n_reports: int) -> str:
    if metric not in wanted:
        return "not in eval.metrics"
    if metric in IMAGE_METRICS:
        return "no generated images" + (" (reports of real images are not scored as generated images)" if n_reports else "")
    return "no generated reports"


def run(cfg) -> None:
    """`cxr-irgen evaluate generated=DIR [generated_reports=CSV] data=phantom data.root=...`."""
    from accelerate import PartialState

    from cxr_irgen.eval.tables import write_tables
    from cxr_irgen.utils.rundir import run_dir

    results = evaluate(cfg)
    if not PartialState(cpu=not torch.cuda.is_available()).is_main_process:
        return
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=1, default=float))
    if results.get("memorisation"):
        from cxr_irgen.eval.memorisation import save_pairs_figure

        save_pairs_figure(results["memorisation"]["top_pairs"], out / "memorisation_pairs.png")
    tables = write_tables(results, out)
    print(tables.read_text())
    bad = results.get("skipped_images") or {}
    if bad.get("n"):
        print(f"skipped {bad['n']} bad image(s) (data.skip_bad=true): " + ", ".join(b["image"] for b in bad["generated"] + bad["real"]))
    print(f"metrics: {out / 'metrics.json'}")
