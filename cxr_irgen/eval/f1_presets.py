"""CheXpert F1 as each report-generation paper computed it, for cross-reading their tables.

Every preset labels nothing itself: it takes the (N, 14) label tables of generated and
reference reports (1 / 0 / -1 / NaN, from one labeler) and applies one paper's protocol.

- ``miura2021`` (ifcc, M2Trans): uncertain → positive, blank → negative, micro over the
  top 5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion).
- ``endo2021`` (CXR-RePaiR): NaN and -1 → 0, macro over the 14 observations (sklearn's
  ``average="macro"``, a class with no positive on either side scores 0), reported as the
  mean over 10 bootstrap resamples of the test set with a t-interval half-width.
- ``r2gen`` (R2Gen): NaN and -1 → 0, micro and macro over the 14 observations.

The protocol's own F1 is the entry named in ``reported``; the other entries are given for
completeness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxr_irgen.text.chexpert_f1 import binarise, weighted_f1_scores


@dataclass(frozen=True)
class F1Protocol:
    """One paper's F1: the uncertain mapping (a :func:`binarise` name), label subset, averages, bootstrap."""

    name: str
    mapping: str
    subset: str
    averages: tuple[str, ...]
    n_bootstrap: int = 0
    description: str = ""

    @property
    def reported(self) -> tuple[str, ...]:
        return tuple(f"{average}_{self.subset}" for average in self.averages)


PRESETS: dict[str, F1Protocol] = {
    "miura2021": F1Protocol("miura2021", "uncertain_as_positive", "top5", ("micro",),
                            description="uncertain→positive, micro over the top 5 (ifcc / M2Trans)"),
    "endo2021": F1Protocol("endo2021", "positive_only", "14", ("macro",), n_bootstrap=10,
                           description="NaN/-1→0, macro over 14, mean of 10 bootstrap resamples (CXR-RePaiR)"),
    "r2gen": F1Protocol("r2gen", "positive_only", "14", ("micro", "macro"),
                        description="NaN/-1→0, micro and macro over 14 (R2Gen)"),
}


def preset_f1(generated: np.ndarray, reference: np.ndarray, preset: str, seed: int = 0) -> dict:
    """F1 of (N, 14) generated vs reference labels under one paper's protocol.

    Returns ``{"preset", "description", "n_reports", "<average>_<subset>": {"value", ...}}``;
    with a bootstrap, ``value`` is the mean over resamples (as the paper reports it) and
    ``full_set`` the F1 on the whole test set, plus ``half_width_95`` (t-interval) and the seed.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown F1 preset {preset!r}; use one of {sorted(PRESETS)}")
    protocol = PRESETS[preset]
    generated, reference = np.asarray(generated, dtype=np.float32), np.asarray(reference, dtype=np.float32)
    if generated.shape != reference.shape or generated.ndim != 2 or generated.shape[1] != 14:
        raise ValueError(f"need two (N, 14) label arrays, got {generated.shape} and {reference.shape}")
    n = len(generated)
    g = binarise(generated, protocol.mapping).astype(np.float64)
    r = binarise(reference, protocol.mapping).astype(np.float64)
    hits, false_pos, misses = g * r, g * (1 - r), (1 - g) * r
    point = weighted_f1_scores(np.ones((1, n)), hits, false_pos, misses)
    out: dict = {"preset": preset, "description": protocol.description, "n_reports": n}
    if protocol.n_bootstrap:
        picks = np.random.default_rng(seed).integers(0, n, size=(protocol.n_bootstrap, n))
        weights = np.zeros((protocol.n_bootstrap, n))
        np.add.at(weights, (np.repeat(np.arange(protocol.n_bootstrap), n), picks.ravel()), 1.0)
        draws = weighted_f1_scores(weights, hits, false_pos, misses)
    for key in protocol.reported:
        if protocol.n_bootstrap:
            samples = draws[key]
            half = stats.t.ppf(0.975, len(samples) - 1) * stats.sem(samples)
            out[key] = {"value": float(samples.mean()), "full_set": float(point[key][0]), "half_width_95": float(half),
                        "n_bootstrap": protocol.n_bootstrap, "bootstrap_seed": seed}
        else:
            out[key] = {"value": float(point[key][0])}
    return out


def all_presets(generated: np.ndarray, reference: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """:func:`preset_f1` for every preset, keyed by preset name."""
    return {name: preset_f1(generated, reference, name, seed) for name in PRESETS}
