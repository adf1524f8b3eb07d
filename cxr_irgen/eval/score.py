"""Evaluation without a config: the numbers ``cxr-irgen evaluate`` prints, from images, reports and labels in memory.

- :func:`evaluate_images` — FID, KID, PRDC (and per pathology), PSNR/SSIM, MS-SSIM diversity, the AUROC protocol and
  memorisation of generated images against real ones.
- :func:`evaluate_reports` — BLEU / ROUGE-L / CIDEr-D / METEOR, CheXpert F1, agreement with conditioning labels, guards.
- :func:`evaluate_pairs` — agreement of generated image–report pairs with each other and with the requested labels.

Each returns a dict (the blocks of ``metrics.json``, variants and N named, ``skipped`` giving the reason of each
metric that did not run). ``cxr-irgen evaluate`` builds these inputs from its config and calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cxr_irgen.data.labels import CHEXPERT_LABELS, label_key, parse_labels
from cxr_irgen.errors import UserError
from cxr_irgen.eval.auroc import PAPER_PATHOLOGIES
from cxr_irgen.eval.sources import as_images, process_state, shard_map

DISTRIBUTION_METRICS = ("fid", "kid", "prdc")  # compare the two feature distributions
FEATURE_METRICS = (*DISTRIBUTION_METRICS, "per_pathology", "memorisation", "privacy")  # every metric on the FID extractor's features
IMAGE_METRICS = (*FEATURE_METRICS, "inception_score", "psnr_ssim", "diversity", "auroc")
REPORT_METRICS = ("text", "chexpert_f1", "guards")
POSITIVE_ONLY = "positive only: 1 → positive; 0, -1 (uncertain) and blank → negative"


@dataclass
class ImageSettings:
    """Knobs of :func:`evaluate_images` (``eval.*`` of the config, same defaults)."""

    metrics: tuple[str, ...] = ("fid", "kid", "prdc", "per_pathology", "psnr_ssim", "diversity", "auroc")
    batch_size: int = 32
    seed: int = 1234                  # label pairing, AUROC groups, KID subsets, memorisation draws
    kid_subset_size: int = 1000       # clipped to the smaller set (recorded)
    kid_subsets: int = 100
    prdc_k: int = 5
    per_pathology_min_n: int = 20     # positives needed among generated and among real images per label
    max_pairs_per_label: int = 50     # MS-SSIM diversity
    auroc_pathologies: tuple[str, ...] = PAPER_PATHOLOGIES
    auroc_n: int = 500
    memorisation: dict = field(default_factory=lambda: {"ssim_resolution": 64, "ssim_threshold": 0.9, "cosine_threshold": 0.95, "top": 8})
    privacy: dict = field(default_factory=lambda: {"resolution": 128, "pixel_threshold": 0.05, "feature_threshold": None,
                                                   "training_quantile": 0.05, "top": 8})
    inception_score_splits: int = 10
    allow_random_weights: bool = False

    @classmethod
    def from_cfg(cls, ev) -> "ImageSettings":
        """From the ``eval`` config node."""
        mem, priv = ev.memorisation, ev.privacy
        return cls(metrics=tuple(m for m in ev.metrics if m in IMAGE_METRICS), batch_size=int(ev.batch_size), seed=int(ev.seed),
                   kid_subset_size=int(ev.kid.subset_size), kid_subsets=int(ev.kid.subsets), prdc_k=int(ev.prdc.k),
                   per_pathology_min_n=int(ev.per_pathology.min_n), max_pairs_per_label=int(ev.diversity.max_pairs_per_label),
                   auroc_pathologies=tuple(str(p) for p in ev.auroc.pathologies), auroc_n=int(ev.auroc.n),
                   memorisation={"ssim_resolution": int(mem.ssim_resolution), "ssim_threshold": float(mem.ssim_threshold),
                                 "cosine_threshold": float(mem.cosine_threshold), "top": int(mem.top)},
                   privacy={"resolution": int(priv.resolution), "pixel_threshold": float(priv.pixel_threshold),
                            "feature_threshold": None if priv.feature_threshold is None else float(priv.feature_threshold),
                            "training_quantile": float(priv.training_quantile), "top": int(priv.top)},
                   inception_score_splits=int(ev.inception_score.splits),
                   allow_random_weights=bool(ev.get("allow_random_weights", False)))


def label_array(labels, n: int, what: str = "labels") -> np.ndarray:
    """(n, 14) float32 labels (1/0/-1/NaN) from None (all NaN), an array, or a list of label strings / vectors / None."""
    if labels is None:
        return np.full((n, len(CHEXPERT_LABELS)), np.nan, np.float32)
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        out = labels.astype(np.float32)
    else:
        out = np.stack([np.full(len(CHEXPERT_LABELS), np.nan, np.float32) if v is None else parse_labels(v) if isinstance(v, (str, dict))
                        else np.asarray(v, np.float32) for v in labels]) if len(labels) else np.zeros((0, len(CHEXPERT_LABELS)), np.float32)
    if out.shape != (n, len(CHEXPERT_LABELS)):
        raise UserError(f"{what}: need one 14-label vector per image, (N={n}, 14); got shape {out.shape}")
    return out


def random_weight_metrics(features, xrv_weights, wanted, rad_dino=None) -> dict[str, str]:
    """``{metric: what has random weights}`` for the metrics in ``wanted`` that would use a randomly initialised extractor."""
    if isinstance(features, str) and features == "xrv" and not xrv_weights:
        what = "XRV DenseNet-121 feature extractor with random weights (eval.xrv_weights unset)"
    elif isinstance(features, str) and features == "rad_dino" and not rad_dino:
        what = "RAD-DINO feature extractor with random weights (eval.fid.rad_dino unset)"
    else:
        return {}
    return {m: what for m in FEATURE_METRICS if m in wanted}


def random_weights_error(metric: str, what: str) -> UserError:
    """The one-line refusal of ``metric`` computed by a randomly initialised network ``what``."""
    weights = "eval.fid.rad_dino=/path/to/rad-dino (or weights.root)" if "RAD-DINO" in what else "eval.xrv_weights=/path/densenet121-res224-all.pt"
    return UserError(f"{metric} would come from a {what}: set {weights} "
                     "(or eval.fid.features=classifier eval.fid.classifier=TRAIN_CLASSIFIER_RUN, or drop it from eval.metrics); "
                     "eval.allow_random_weights=true computes it anyway, marked, for smoke tests")


def classifier_features(run_dir) -> torch.nn.Module:
    """DenseNet ``features2`` (B, 1024) of a train-classifier run's model, at its resolution (``eval.fid.features=classifier``)."""
    from cxr_irgen.eval.classifier import Classifier
    from cxr_irgen.eval.features import XRVFeatures

    clf = Classifier.from_run_dir(run_dir)
    extractor = XRVFeatures(model=clf.model, resolution=clf.resolution)
    extractor.name = f"{clf.name} features2 ({clf.resolution}px)"
    return extractor


def feature_extractor(features, xrv_weights=None, inception_weights=None, rad_dino=None) -> torch.nn.Module:
    """The FID extractor: ``xrv`` | ``inception`` | ``rad_dino`` (``rad_dino``: its folder or cached hub id; see :func:`~cxr_irgen.eval.features.build_feature_extractor`), a
    train-classifier run directory (:func:`classifier_features`) or a module mapping (B, 1, H, W) in [0, 1] to (B, D)
    (named by its ``name`` attribute)."""
    from omegaconf import OmegaConf

    from cxr_irgen.eval.features import build_feature_extractor

    if isinstance(features, (str, Path)) and Path(features).is_dir():
        return classifier_features(features)
    if isinstance(features, torch.nn.Module):
        return features if isinstance(getattr(features, "name", None), str) else build_feature_extractor(OmegaConf.create({"features": "module"}), module=features)
    node = {"features": str(features), "inception_weights": inception_weights, "rad_dino": None if rad_dino is None else str(rad_dino)}
    return build_feature_extractor(OmegaConf.create(node), xrv_weights)


def _embed(extractor, source, settings: ImageSettings, state, desc: str) -> np.ndarray:
    """(N, D) float64 features of every image of ``source``."""
    fn = lambda idx: list(extractor(source.load(idx).to(state.device)).double().cpu().numpy())  # noqa: E731
    return np.stack(shard_map(fn, len(source), settings.batch_size, desc, state))


def distribution_metrics(gen_features: np.ndarray, real_features: np.ndarray, settings: ImageSettings, wanted: Sequence[str]) -> tuple[dict, dict]:
    """FID, KID and PRDC of (N, D) generated vs (M, D) real features, as ``wanted``: ``({metric: block}, {metric: why skipped})``."""
    from cxr_irgen.eval.image_metrics import fid_from_features
    from cxr_irgen.eval.kid import kid_from_features
    from cxr_irgen.eval.prdc import prdc_from_features

    out, skipped = {}, {}
    smaller = min(len(gen_features), len(real_features))
    if "fid" in wanted:
        if smaller >= 2:
            out["fid"] = {"value": fid_from_features(gen_features, real_features)}
        else:
            skipped["fid"] = "FID needs at least 2 generated and 2 real images"
    if "kid" in wanted:
        size = min(settings.kid_subset_size, smaller)  # torch-fidelity refuses a larger subset; the size used is recorded
        if size >= 2:
            out["kid"] = kid_from_features(gen_features, real_features, size, settings.kid_subsets, settings.seed)
        else:
            skipped["kid"] = "KID needs at least 2 generated and 2 real images"
    if "prdc" in wanted:
        k = settings.prdc_k
        if smaller > k:
            out["prdc"] = prdc_from_features(gen_features, real_features, k)
        else:
            skipped["prdc"] = f"precision/recall/density/coverage with k={k} need more than {k} generated and real images"
    return out, skipped


def per_pathology(gen_features, real_features, gen_labels, real_labels, settings: ImageSettings) -> dict:
    """FID/KID (and PRDC where N > k) on the positives (label = 1) of each CheXpert label; labels with fewer than
    ``per_pathology_min_n`` positives in either set carry their N and the reason instead of numbers."""
    labels = {}
    for j, name in enumerate(CHEXPERT_LABELS):
        g, r = gen_labels[:, j] == 1.0, real_labels[:, j] == 1.0
        entry = {"n_generated": int(g.sum()), "n_real": int(r.sum())}
        if min(entry.values()) < settings.per_pathology_min_n:
            entry["skipped"] = f"fewer than min_n={settings.per_pathology_min_n} positives"
        else:
            values, skipped = distribution_metrics(gen_features[g], real_features[r], settings, DISTRIBUTION_METRICS)
            entry.update({"fid": values["fid"]["value"], "kid": values.get("kid"), "prdc": values.get("prdc"), "skipped_metrics": skipped})
        labels[name] = entry
    return {"min_n": settings.per_pathology_min_n, "positive": "label = 1 (the generated image's conditioning label; the real image's label)",
            "labels": labels}


def _memorisation(extractor, gen, gen_features, training, settings: ImageSettings, state) -> dict:
    from cxr_irgen.eval.memorisation import nearest_training_images

    mem = settings.memorisation
    training = as_images(training, gen.resolution, "training")
    train_features = _embed(extractor, training, settings, state, "memorisation: training features")
    small = lambda source: source.at(int(mem["ssim_resolution"])).load(range(len(source)))  # noqa: E731
    out = nearest_training_images(gen_features, train_features, small(gen), small(training), gen.paths, training.paths,
                                  float(mem["cosine_threshold"]), float(mem["ssim_threshold"]), int(mem["top"]))
    return {**out, "feature_extractor": extractor.name}


def _privacy(extractor, gen, gen_features, training, settings: ImageSettings, state) -> dict:
    from cxr_irgen.eval.privacy import privacy_metrics

    priv = settings.privacy
    training = as_images(training, gen.resolution, "training")
    train_features = _embed(extractor, training, settings, state, "privacy: training features")
    pixels = lambda source: source.at(int(priv["resolution"])).load(range(len(source)))  # noqa: E731
    out = privacy_metrics(pixels(gen), pixels(training), gen_features, train_features, gen.paths, training.paths, priv["pixel_threshold"],
                          priv["feature_threshold"], priv["training_quantile"], int(priv["top"]))
    return {**out, "feature_extractor": extractor.name}


def _inception_score(gen, weights, settings: ImageSettings, state) -> dict:
    from cxr_irgen.eval.inception_score import InceptionLogits, inception_score

    network = InceptionLogits(weights).to(state.device)
    fn = lambda idx: list(network(gen.load(idx).to(state.device)).double().cpu().numpy())  # noqa: E731
    logits = np.stack(shard_map(fn, len(gen), settings.batch_size, "inception score: logits", state))
    return {**inception_score(logits, splits=settings.inception_score_splits), "network": network.name, "n_generated": len(gen)}


def _psnr_ssim(gen, gen_keys, real, real_keys, settings: ImageSettings, state) -> dict | None:
    from cxr_irgen.eval.image_metrics import pair_by_label, psnr, ssim

    pairs = pair_by_label(gen_keys, real_keys, settings.seed)
    if not pairs:
        return None

    def score(idx):
        a, b = gen.load([pairs[i][0] for i in idx]), real.load([pairs[i][1] for i in idx])
        return list(zip(psnr(a, b).tolist(), ssim(a, b).tolist()))

    values = np.array(shard_map(score, len(pairs), settings.batch_size, "psnr/ssim", state))
    return {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean()), "n_pairs": len(pairs), "n_unpaired": len(gen_keys) - len(pairs),
            "pairing": "same full label vector; real partner drawn at random (eval.seed)", "resolution": gen.resolution}


def _diversity(gen, gen_keys, settings: ImageSettings, state) -> dict | None:
    from cxr_irgen.eval.image_metrics import ms_ssim, ms_ssim_scales, within_label_pairs

    pairs = within_label_pairs(gen_keys, settings.max_pairs_per_label, settings.seed)
    if not pairs:
        return None

    def score(idx):
        return ms_ssim(gen.load([pairs[i][0] for i in idx]), gen.load([pairs[i][1] for i in idx])).tolist()

    values = shard_map(score, len(pairs), settings.batch_size, "ms-ssim diversity", state)
    return {"ms_ssim_within_label": float(np.mean(values)), "n_pairs": len(pairs), "n_labels": len({gen_keys[i] for i, _ in pairs}),
            "scales": ms_ssim_scales(gen.resolution), "resolution": gen.resolution}


def load_classifier_once(classifier, xrv_weights=None):
    """A :class:`~cxr_irgen.eval.classifier.Classifier` as given, or loaded from ``xrv`` (with ``xrv_weights``) / a train-classifier run dir."""
    from cxr_irgen.eval.classifier import Classifier, load_classifier

    return classifier if isinstance(classifier, Classifier) else load_classifier(str(classifier), xrv_weights)


def _auroc_block(classifier, source, labels: np.ndarray, settings: ImageSettings, state, desc: str) -> dict:
    from cxr_irgen.eval.auroc import needed_indices, no_finding_rows, protocol_auroc, protocol_groups

    source = source.at(classifier.resolution)
    groups = protocol_groups(labels, list(settings.auroc_pathologies), settings.auroc_n, settings.seed)
    indices = needed_indices(groups)
    logits = shard_map(lambda idx: list(classifier.logits(source.load([int(indices[i]) for i in idx])).numpy()),
                       len(indices), settings.batch_size, desc, state)
    return {**protocol_auroc(dict(zip(indices.tolist(), logits)), groups, classifier.pathologies),
            "n_no_finding_conflicting": no_finding_rows(labels)[1]}


def evaluate_images(generated, real, *, labels=None, real_labels=None, features="xrv", classifier=None, xrv_weights: str | None = None,
                    inception_weights: str | None = None, rad_dino: str | None = None, inception_score_weights: str | None = None, training=None, auroc_real=None, resolution: int | None = None,
                    settings: ImageSettings | None = None, state=None, **overrides) -> dict:
    """Image metrics of ``generated`` against ``real`` images.

    ``generated`` / ``real`` / ``training``: a folder, a list of paths, or an array / tensor (N, 1, H, W) in [0, 1]
    (see :func:`~cxr_irgen.eval.sources.as_images`). ``labels`` / ``real_labels``: one 14-label vector per image
    ((N, 14) array, label strings like ``"Cardiomegaly=1, Edema=0"``, or None for unlabelled) — needed by PSNR/SSIM
    pairing, diversity, per-pathology rows and AUROC. ``features``: ``xrv`` | ``inception`` | a train-classifier run dir
    | ``rad_dino`` (weights ``rad_dino``: a folder or cached hub id) | a module (B, 1, H, W) → (B, D). ``classifier``: ``xrv`` | a train-classifier run dir | a ``Classifier`` (AUROC; None skips it).
    ``training``: images searched by ``memorisation`` and ``privacy``. ``inception_score_weights``: torch-fidelity's
    Inception ``.pth`` (the Inception Score needs its class logits). ``auroc_real``: ``(images, (M, 14) labels)`` for the same AUROC
    protocol on real images. ``resolution``: side of every image metric (None: the first generated image's).
    ``settings`` / ``overrides``: :class:`ImageSettings` fields (``metrics``, ``seed``, ``kid_subsets``, ...).

    Returns ``{metric: block, "skipped": {metric: reason}}``; a metric from random weights (only with
    ``allow_random_weights=True``) carries ``random_weights``.
    """
    settings = replace(settings or ImageSettings(), **overrides)
    wanted = set(settings.metrics)
    unknown = wanted - set(IMAGE_METRICS)
    if unknown:
        raise UserError(f"image metrics: unknown {sorted(unknown)}; choose from {', '.join(IMAGE_METRICS)}")
    random = random_weight_metrics(features, xrv_weights, wanted, rad_dino)
    if random and not settings.allow_random_weights:
        raise random_weights_error(*next(iter(random.items())))
    for metric in ("memorisation", "privacy"):
        if metric in wanted and training is None:
            raise UserError(f"{metric} needs training images (training=...)")
    state = process_state(state)
    gen = as_images(generated, resolution, "generated")
    real = as_images(real, gen.resolution, "real")
    gen_labels, real_labels = label_array(labels, len(gen), "labels"), label_array(real_labels, len(real), "real_labels")
    labelled = ~np.isnan(gen_labels).all(axis=1)
    gen_keys = [label_key(v) if ok else f"unlabelled-{i}" for i, (v, ok) in enumerate(zip(gen_labels, labelled))]
    results: dict = {"skipped": {}}
    if wanted & set(FEATURE_METRICS):
        extractor = feature_extractor(features, xrv_weights, inception_weights, rad_dino).to(state.device).eval()
        gen_features = _embed(extractor, gen, settings, state, "features: generated")
        if "memorisation" in wanted:
            results["memorisation"] = _memorisation(extractor, gen, gen_features, training, settings, state)
        if "privacy" in wanted:
            results["privacy"] = _privacy(extractor, gen, gen_features, training, settings, state)
        if wanted & {*DISTRIBUTION_METRICS, "per_pathology"}:
            real_features = _embed(extractor, real, settings, state, "features: real")
            described = {"feature_extractor": extractor.name, "n_generated": len(gen), "n_real": len(real), "resolution": gen.resolution}
            values, skipped = distribution_metrics(gen_features, real_features, settings, wanted)
            results.update({metric: {**block, **described} for metric, block in values.items()})
            results["skipped"].update(skipped)
            if "per_pathology" in wanted:
                results["per_pathology"] = {**per_pathology(gen_features, real_features, gen_labels, real_labels, settings), **described}
    if "inception_score" in wanted:
        if len(gen) < settings.inception_score_splits:
            results["skipped"]["inception_score"] = f"needs at least {settings.inception_score_splits} images (its splits), got {len(gen)}"
        elif inception_score_weights:
            results["inception_score"] = _inception_score(gen, inception_score_weights, settings, state)
        else:
            results["skipped"]["inception_score"] = ("needs torch-fidelity's Inception weights (eval.inception_score.weights=/path/"
                                                     "weights-inception-2015-12-05-6726825d.pth, the inception-fid part of weights.root)")
    if "psnr_ssim" in wanted:
        store_result(results, "psnr_ssim", _psnr_ssim(gen, gen_keys, real, [label_key(v) for v in real_labels], settings, state),
               "no generated label vector occurs among the real images")
    if "diversity" in wanted:
        store_result(results, "diversity", _diversity(gen, gen_keys, settings, state), "no two generated images share a label vector")
    if "auroc" in wanted:
        if classifier is None:
            results["skipped"]["auroc"] = "set eval.auroc.classifier=xrv (with eval.xrv_weights) or a train-classifier run dir"
        else:
            clf = load_classifier_once(classifier, xrv_weights)
            clf.model.to(state.device)
            results["auroc"] = {"classifier": clf.name, "n": settings.auroc_n, "resolution": clf.resolution,
                                "generated": _auroc_block(clf, gen, gen_labels, settings, state, "auroc: generated")}
            if auroc_real is not None:
                images, truth = auroc_real
                source = as_images(images, clf.resolution, "auroc_real")
                results["auroc"]["real"] = _auroc_block(clf, source, label_array(truth, len(source), "auroc_real labels"), settings, state, "auroc: real")
    for metric, what in random.items():
        if metric in results:
            results[metric]["random_weights"] = what
    return results


def store_result(results: dict, key: str, value: dict | None, reason: str) -> None:
    """``results[key] = value``, or ``reason`` under ``results["skipped"][key]`` when there is no value."""
    if value is None:
        results["skipped"][key] = reason
    else:
        results[key] = value


def _labeler(labeler) -> tuple[dict, str]:
    """``label_reports`` keywords and the name outputs use, from ``"rules"`` or a keyword dict (``backend``, ...)."""
    if isinstance(labeler, str):
        return {"backend": labeler}, labeler
    kwargs = dict(labeler)
    backend = kwargs.get("backend", "rules")
    return kwargs, backend if backend == "rules" else f"{backend}:{kwargs.get('checkpoint')}"


def evaluate_reports(generated, references=None, *, labeler="rules", metrics: Sequence[str] = REPORT_METRICS, conditioning_labels=None,
                     training_reports: Sequence[str] | None = None, guard_threshold: float = 0.95, meteor: bool = False,
                     n_bootstrap: int = 1000, seed: int = 1234, reference_section: str | None = None) -> dict:
    """Report metrics of generated reports.

    ``generated``: a list of N strings, or a DataFrame with a ``report`` column (and ``reference`` /
    ``labels`` columns used when ``references`` / ``conditioning_labels`` are not given). ``references``: N strings
    (None or '' leaves that report out of BLEU/ROUGE/CIDEr/METEOR and CheXpert F1). ``conditioning_labels``: the labels
    each report was written for ((N, 14) or label strings; None rows skipped) → ``report_label_agreement``.
    ``labeler``: ``"rules"`` or :func:`~cxr_irgen.text.labeler.label_reports` keywords. ``training_reports``: texts the
    guards compare with (near copies). Returns ``{text, chexpert_f1, report_label_agreement, guards, skipped}`` as run.
    """
    from cxr_irgen.text.chexpert_f1 import chexpert_f1
    from cxr_irgen.text.labeler import label_reports

    if isinstance(generated, pd.DataFrame):
        if "report" not in generated.columns:
            raise UserError(f"generated reports table needs a 'report' column; available columns: {', '.join(map(str, generated.columns))}")
        table = generated
        references = references if references is not None else table["reference"].tolist() if "reference" in table.columns else None
        conditioning_labels = conditioning_labels if conditioning_labels is not None else table["labels"].tolist() if "labels" in table.columns else None
        generated = table["report"].tolist()
    hyps = [str(h) for h in generated]
    n = len(hyps)
    if not n:
        raise UserError("no generated reports to evaluate")
    wanted = set(metrics)
    unknown = wanted - set(REPORT_METRICS)
    if unknown:
        raise UserError(f"report metrics: unknown {sorted(unknown)}; choose from {', '.join(REPORT_METRICS)}")
    refs = [None] * n if references is None else [None if r is None or r != r or not str(r).strip() else str(r) for r in references]
    if len(refs) != n:
        raise UserError(f"{n} generated reports but {len(refs)} references")
    kwargs, name = _labeler(labeler)
    results: dict = {"skipped": {}}
    if conditioning_labels is not None and "chexpert_f1" in wanted:
        rows = [i for i, v in enumerate(conditioning_labels) if v is not None and not (isinstance(v, float) and v != v)]
        if rows:
            own = label_reports([hyps[i] for i in rows], **kwargs)
            wanted_labels = label_array([conditioning_labels[i] for i in rows], len(rows), "conditioning_labels")
            results["report_label_agreement"] = {"labeler": name, **chexpert_f1(own, wanted_labels, n_bootstrap=n_bootstrap, seed=seed)}
    scored = [i for i, r in enumerate(refs) if r is not None]
    if scored:
        h, r = [hyps[i] for i in scored], [refs[i] for i in scored]
        if "text" in wanted:
            from cxr_irgen.text.text_metrics import text_metrics

            results["text"] = {**text_metrics(h, r, with_meteor=meteor), **({"reference_section": reference_section} if reference_section else {})}
        if "chexpert_f1" in wanted:
            results["chexpert_f1"] = {"labeler": name, **chexpert_f1(label_reports(h, **kwargs), label_reports(r, **kwargs), n_bootstrap=n_bootstrap, seed=seed)}
    else:
        for metric in wanted & {"text", "chexpert_f1"}:
            results["skipped"][metric] = "no generated report has a reference (give generated_reports=CSV with a reference column, or reports of real test images)"
    if "guards" in wanted:
        from cxr_irgen.eval.report_guards import report_guards

        results["guards"] = report_guards(hyps, list(training_reports) if training_reports is not None else None, guard_threshold)
    return results


def evaluate_pairs(images, reports: Sequence[str], requested_labels, *, classifier, labeler="rules", xrv_weights: str | None = None,
                   threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 1234, batch_size: int = 32, state=None) -> dict:
    """Agreement of N generated image–report pairs: the classifier's call on each image, the labeler's labels of its
    report, and the labels it was requested with — three pairwise agreements over the CheXpert labels the classifier
    outputs (per label F1 and accuracy; micro / macro F1 and accuracy with 95% bootstrap CIs; see
    :mod:`~cxr_irgen.eval.agreement`).

    ``images``: N images (folder, paths, or (N, 1, H, W) in [0, 1]); ``reports``: N strings; ``requested_labels``:
    (N, 14) or N label strings. ``classifier``: ``xrv`` | a train-classifier run dir | a ``Classifier``; an image is
    positive for a label when sigmoid(output) > ``threshold``. Labels of reports and requests: positive only.
    """
    from cxr_irgen.eval.agreement import label_agreement
    from cxr_irgen.eval.auroc import output_index
    from cxr_irgen.text.labeler import label_reports

    reports = [str(r) for r in reports]
    requested = label_array(requested_labels, len(reports), "requested_labels")
    state = process_state(state)
    clf = load_classifier_once(classifier, xrv_weights)
    source = as_images(images, clf.resolution, "images")
    if len(source) != len(reports):
        raise UserError(f"evaluate_pairs: {len(source)} images but {len(reports)} reports")
    columns = {}
    for name in CHEXPERT_LABELS:
        try:
            columns[name] = output_index(clf.pathologies, name)
        except UserError:
            continue
    if not columns:
        raise UserError(f"the classifier outputs none of the CheXpert labels; its pathologies: {', '.join(clf.pathologies)}")
    clf.model.to(state.device)
    logits = np.stack(shard_map(lambda idx: list(clf.logits(source.load(idx)).numpy()), len(source), batch_size, "agreement: classifier", state))
    names = list(columns)
    chexpert = [CHEXPERT_LABELS.index(n) for n in names]
    kwargs, labeler_name = _labeler(labeler)
    calls = {
        "image": 1 / (1 + np.exp(-logits[:, [columns[n] for n in names]])) > threshold,
        "report": label_reports(reports, **kwargs)[:, chexpert] == 1.0,
        "requested": requested[:, chexpert] == 1.0,
    }
    pairs = {f"{a}_vs_{b}": label_agreement(calls[a], calls[b], names, n_bootstrap, seed)
             for a, b in (("image", "requested"), ("report", "requested"), ("image", "report"))}
    return {"classifier": clf.name, "labeler": labeler_name, "n_pairs": len(reports), "labels": names,
            "image_call": f"sigmoid(classifier output) > {threshold}", "report_and_request_labels": POSITIVE_ONLY,
            "measures": "F1 = 2·both/(calls of a + calls of b) (symmetric), accuracy = share of agreeing item×label cells", **pairs}

