"""Agreement of two binary label sources on the same items (e.g. a generated image's classifier calls and its
report's labeler labels), with bootstrap CIs.

Each source is an (N, L) bool array over the same L labels. Per label: F1 = 2·both / (n_a + n_b)
(symmetric: neither source is the reference; NaN when neither calls the label anywhere) and
accuracy (share of items where the two agree, positives and negatives). Over labels: micro F1
(counts summed over labels), macro F1 (mean of the defined per-label F1) and accuracy (over
every item × label). 95% CIs from a seeded bootstrap over items.
"""

from __future__ import annotations

import numpy as np


def _scores(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Micro/macro F1 and accuracy for every row of ``weights`` (B, N) (how often each item is drawn)."""
    both, only_a, only_b = weights @ (a & b), weights @ (a & ~b), weights @ (~a & b)  # (B, L)
    same = weights @ (a == b)
    per_label = np.divide(2 * both, 2 * both + only_a + only_b, out=np.full(both.shape, np.nan), where=(2 * both + only_a + only_b) > 0)
    micro_den = (2 * both + only_a + only_b).sum(1)
    micro = np.divide(2 * both.sum(1), micro_den, out=np.full(len(weights), np.nan), where=micro_den > 0)
    defined = ~np.isnan(per_label)
    macro = np.divide(np.where(defined, per_label, 0).sum(1), defined.sum(1), out=np.full(len(weights), np.nan), where=defined.sum(1) > 0)
    accuracy = same.sum(1) / (weights.sum(1) * a.shape[1])
    return {"micro_f1": micro, "macro_f1": macro, "accuracy": accuracy}


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def label_agreement(a: np.ndarray, b: np.ndarray, labels: list[str], n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Agreement of (N, L) bool ``a`` and ``b``: ``{"micro_f1"|"macro_f1"|"accuracy": {"value", "ci95"}, "per_label":
    {label: {"f1", "accuracy", "n_a", "n_b"}}, "n", "n_bootstrap", "bootstrap_seed"}``."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != len(labels):
        raise ValueError(f"need two (N, {len(labels)}) arrays, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("agreement of 0 items is undefined")
    af, bf = a.astype(np.float64), b.astype(np.float64)
    point = _scores(np.ones((1, n)), a, b)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in point}
    for start in range(0, n_bootstrap, 200):
        size = min(200, n_bootstrap - start)
        weights = np.zeros((size, n))
        np.add.at(weights, (np.repeat(np.arange(size), n), rng.integers(0, n, size=(size, n)).ravel()), 1.0)
        for k, v in _scores(weights, a, b).items():
            draws[k].append(v)
    out: dict = {"n": n, "n_bootstrap": n_bootstrap, "bootstrap_seed": seed}
    for k, v in point.items():
        samples = np.concatenate(draws[k]) if n_bootstrap else np.array([])
        samples = samples[~np.isnan(samples)]
        ci = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))] if len(samples) else None
        out[k] = {"value": _value(v[0]), "ci95": ci}
    both, n_a, n_b = (af * bf).sum(0), af.sum(0), bf.sum(0)
    out["per_label"] = {
        name: {"f1": _value(2 * both[j] / (n_a[j] + n_b[j])) if n_a[j] + n_b[j] else None,
               "accuracy": float((a[:, j] == b[:, j]).mean()), "n_a": int(n_a[j]), "n_b": int(n_b[j])}
        for j, name in enumerate(labels)
    }
    return out
