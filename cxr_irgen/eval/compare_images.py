"""`cxr-irgen compare-images`: two or more generated image sets against the same real images, with paired bootstraps.

Every set is embedded with the extractor of ``eval.fid`` and scored against the same seeded ``eval.real``
images (as `cxr-irgen evaluate` does); FID and KID (``eval.kid``), and with ``eval.auroc.classifier`` the
AUROC protocol on each set's conditioning labels. Each set is compared with the first (the baseline) by
:func:`cxr_irgen.eval.significance.paired_bootstrap`: every resample draws the real images once for both
sets, and the generated items with the same indices when the sets have the same length (e.g. generate runs
of one labels file), independently otherwise. AUROC resamples the generated items only (it has no real
side). Writes ``compare_images.json``, ``compare_images.md`` (printed) and ``features.npz`` (the features
the bootstrap resampled: ``real`` and one array per set, so a test can be rerun with another R).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

COMPARED = ("fid", "kid", "auroc")


def _entries(generated) -> list[dict]:
    """``[{name, path}]`` of the ``generated`` entries; at least two, names unique."""
    entries = []
    for entry in OmegaConf.to_container(generated) if OmegaConf.is_config(generated) else list(generated or []):
        path = entry.get("path") if isinstance(entry, dict) else entry
        if not path:
            raise UserError(f"generated entry {entry!r} has no path")
        entries.append({"path": str(path), "name": str(entry.get("name") or Path(str(path)).name) if isinstance(entry, dict) else Path(str(path)).name})
    if len(entries) < 2:
        raise UserError(f"compare-images needs generated=[A,B,...] with at least two sets, got {len(entries)}")
    names = [e["name"] for e in entries]
    if len(set(names)) < len(names):
        raise UserError(f"generated: duplicate names {sorted({n for n in names if names.count(n) > 1})}; give {{path: P, name: N}}")
    return entries


def check(cfg) -> None:
    """User errors before any model loads: the entries, their images, the metric names."""
    from cxr_irgen.eval.generated import load_generated

    unknown = set(cfg.metrics) - set(COMPARED)
    if unknown or not len(cfg.metrics):
        raise UserError(f"metrics={list(cfg.metrics)}: choose one or more of {', '.join(COMPARED)}")
    if "auroc" in cfg.metrics and not cfg.eval.auroc.classifier:
        raise UserError("metrics has auroc: set eval.auroc.classifier=xrv (with eval.xrv_weights) or a train-classifier run dir")
    for entry in _entries(cfg.generated):
        images = load_generated(entry["path"])
        if not (images["image"] != "").any():
            raise UserError(f"generated={entry['path']}: no images")


def _auroc_metric(pathologies: list[str], classifier_pathologies: list[str], n: int, seed: int, width: int):
    """Mean protocol AUROC of rows ``[classifier outputs (P,) | labels (14,)]`` (NaN when no pathology has both groups)."""
    from cxr_irgen.eval.auroc import protocol_auroc, protocol_groups

    def metric(rows: np.ndarray) -> float:
        scores, labels = rows[:, :width], rows[:, width:]
        mean = protocol_auroc(dict(enumerate(scores)), protocol_groups(labels, pathologies, n, seed), classifier_pathologies)["mean"]
        return float("nan") if mean is None else mean

    return metric


def _extractor(cfg, device) -> torch.nn.Module:
    """The extractor ``eval.fid`` names, as `cxr-irgen evaluate` builds it (a train-classifier run's DenseNet for ``classifier``)."""
    from cxr_irgen.eval.features import build_feature_extractor
    from cxr_irgen.eval.score import classifier_features

    if str(cfg.eval.fid.features) == "classifier":
        extractor = classifier_features(cfg.eval.fid.classifier)
    else:
        extractor = build_feature_extractor(cfg.eval.fid, cfg.eval.get("xrv_weights"))
    return extractor.to(device).eval()


def _real_images(cfg) -> list[str]:
    """``eval.real.n`` seeded images of split ``eval.real.split`` and views ``eval.real.views`` of ``data`` (evaluate's draw)."""
    from cxr_irgen.data.adapters import load_table

    table = load_table(cfg.data)
    views = [str(v) for v in cfg.eval.real.views]
    chosen = table[(table["split"] == str(cfg.eval.real.split)) & table["view"].isin(views) & (table["image_path"].fillna("") != "")]
    if chosen.empty:
        raise UserError(f"no real {'/'.join(views)} images in split {cfg.eval.real.split!r} of data={cfg.data.name}; set eval.real.views / eval.real.split")
    n = min(int(cfg.eval.real.n), len(chosen))
    return chosen["image_path"].iloc[np.sort(np.random.default_rng(int(cfg.eval.seed)).choice(len(chosen), n, replace=False))].tolist()


def compare_images(cfg) -> dict:
    """Scores of every set and the paired bootstrap of each against the first, as one dict; also the features used."""
    from accelerate import PartialState

    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.eval.evaluate import ImageSource, refuse_random_weights, shard_map, with_recorded_data
    from cxr_irgen.eval.generated import load_generated
    from cxr_irgen.eval.image_metrics import fid_from_features
    from cxr_irgen.eval.kid import kid_from_features
    from cxr_irgen.eval.significance import paired_bootstrap

    check(cfg)
    entries = _entries(cfg.generated)
    cfg = with_recorded_data(OmegaConf.merge(cfg, {"generated": entries[0]["path"]}))
    state = PartialState(cpu=not torch.cuda.is_available())
    wanted = set(cfg.metrics)
    random = refuse_random_weights(cfg, wanted)
    sig = cfg.significance
    n_resamples, seed, alpha = int(sig.n_resamples), int(sig.seed), float(sig.alpha)
    sets = {e["name"]: load_generated(e["path"]).query("image != ''").reset_index(drop=True) for e in entries}
    first = next(iter(sets.values()))
    resolution = int(cfg.eval.resolution or read_image(first["image"].iloc[0]).shape[-1])
    real_paths = _real_images(cfg)
    batch = int(cfg.eval.batch_size)
    out = {"baseline": entries[0]["name"], "sets": {e["name"]: {"path": e["path"], "n_images": len(sets[e["name"]])} for e in entries},
           "real": {"data": str(cfg.data.name), "root": str(cfg.data.get("root")), "split": str(cfg.eval.real.split), "n": len(real_paths)},
           "resolution": resolution, "test": None, "n_resamples": n_resamples, "seed": seed, "alpha": alpha, "metrics": {}}
    features: dict[str, np.ndarray] = {}
    metrics = {}
    if wanted & {"fid", "kid"}:
        extractor = _extractor(cfg, state.device)
        out["feature_extractor"] = extractor.name

        def embed(paths: list[str], desc: str) -> np.ndarray:
            source = ImageSource(paths, resolution)
            return np.stack(shard_map(lambda idx: list(extractor(source.load(idx).to(state.device)).double().cpu().numpy()), len(paths), batch, desc, state))

        features["real"] = embed(real_paths, "features: real")
        for name, table in sets.items():
            features[name] = embed(table["image"].tolist(), f"features: {name}")
        smallest = min(len(f) for f in features.values())
        size, subsets = min(int(cfg.eval.kid.subset_size), smallest), int(cfg.eval.kid.subsets)
        sets_features = {name: features[name] for name in sets}
        if "fid" in wanted:
            metrics["fid"] = (fid_from_features, sets_features, features["real"])
        if "kid" in wanted:
            if size < 2:
                raise UserError(f"KID needs at least 2 images in every set and the real set (smallest: {smallest})")
            metrics["kid"] = (lambda g, r: kid_from_features(g, r, size, subsets, int(cfg.eval.seed))["mean"], sets_features, features["real"])
            out["kid_protocol"] = {"subset_size": size, "subsets": subsets}
    if "auroc" in wanted:
        from cxr_irgen.eval.classifier import load_classifier

        classifier = load_classifier(str(cfg.eval.auroc.classifier), cfg.eval.get("xrv_weights"))
        classifier.model.to(state.device)
        width = len(classifier.pathologies)
        for name, table in sets.items():
            labelled = table[table["labels"].notna()].reset_index(drop=True)
            if labelled.empty:
                raise UserError(f"metrics has auroc but set {name} has no conditioning labels")
            source = ImageSource(labelled["image"].tolist(), classifier.resolution)
            logits = np.stack(shard_map(lambda idx: list(classifier.logits(source.load(idx)).numpy()), len(labelled), batch, f"auroc: {name}", state))
            features[f"auroc_{name}"] = np.concatenate([logits, np.stack(labelled["labels"].tolist())], axis=1)
        auroc = _auroc_metric(list(cfg.eval.auroc.pathologies), classifier.pathologies, int(cfg.eval.auroc.n), int(cfg.eval.seed), width)
        metrics["auroc"] = (lambda rows, real: auroc(rows), {name: features[f"auroc_{name}"] for name in sets}, None)
        out["auroc_classifier"] = classifier.name
    base = entries[0]["name"]
    for metric, (fn, items, real) in metrics.items():
        rows = {base: {"value": fn(items[base], real)}}
        for name in list(sets)[1:]:
            test = paired_bootstrap(fn, items[base], items[name], real, n_resamples, seed)
            out["test"] = test["test"]
            rows[name] = {"value": test["b"], "difference": test["difference"], "ci95": test["ci95"], "p_value": test["p_value"],
                          "significant": test["p_value"] < alpha, "paired_items": test["paired_items"], "n_valid_resamples": test["n_valid_resamples"]}
        out["metrics"][metric] = rows
    out["random_weights"] = {metric: what for metric, what in random.items() if metric in out["metrics"]}
    return {**out, "features": features}


def _p(value: float, n_resamples: int) -> str:
    """``p=0.0420``; a bootstrap p of 0 (no resample on the other side of 0) as ``p<1/R``."""
    return f"p={value:.4f}" if value > 0 else f"p<{1 / n_resamples:.4f}"


def markdown(result: dict, digits: int = 4) -> str:
    """One row per set: each metric's value, then Δ vs the baseline, 95% interval, p and ``*`` when p < alpha."""
    shown = list(result["metrics"])
    lines = [f"### Image metrics vs {result['baseline']} ({result['test']}, R={result['n_resamples']}, seed {result['seed']}; * p < {result['alpha']}; "
             f"{result['real']['n']} real images, {result.get('feature_extractor', 'no extractor')})", "",
             "| Set | N | " + " | ".join(m.upper() for m in shown) + " |", "|" + "---|" * (len(shown) + 2)]
    for name, info in result["sets"].items():
        cells = []
        for metric in shown:
            row = result["metrics"][metric][name]
            mark = " (random weights)" if metric in result.get("random_weights", {}) else ""
            if "p_value" not in row:
                cells.append(f"{row['value']:.{digits}g} (baseline){mark}")
            else:
                low, high = row["ci95"]
                cells.append(f"{row['value']:.{digits}g} (Δ {row['difference']:+.{digits}g} [{low:+.{digits}g}, {high:+.{digits}g}], "
                             f"{_p(row['p_value'], result['n_resamples'])}){' *' if row['significant'] else ''}{mark}")
        lines.append(f"| {name} | {info['n_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(cfg) -> Path:
    """`cxr-irgen compare-images generated=[A,B] ...`: ``compare_images.json``, ``compare_images.md``, ``features.npz``."""
    from cxr_irgen.utils.rundir import run_dir

    result = compare_images(cfg)
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "features.npz", **result.pop("features"))
    (out / "compare_images.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "compare_images.md").write_text(markdown(result))
    print((out / "compare_images.md").read_text())
    return out
