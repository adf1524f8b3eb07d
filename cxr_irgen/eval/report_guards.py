"""Template-collapse and privacy guards for generated reports.

- ``distinct_share``: distinct generated reports / generated reports (after
  normalisation); 1.0 means no two reports are the same, a collapsed model scores ~0.
- ``copy_share``: share of generated reports that copy a training report verbatim or
  nearly: normalised edit similarity ``1 - levenshtein(a, b) / max(len(a), len(b)) >=
  0.95`` with at least one training report.

Near-copy search is exact where it matters and fast: an exact-match hash first; then
only training reports within the length band the threshold allows (Levenshtein ≥ the
length difference); then a character-histogram lower bound (each edit changes the
histogram's L1 norm by at most 2), vectorised over the band; a banded Levenshtein
(Ukkonen) only for the few survivors.
"""

from __future__ import annotations

import bisect
import re
from typing import Sequence

import numpy as np

COPY_THRESHOLD = 0.95
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,"


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces, stripped."""
    return re.sub(r"\s+", " ", str(text).lower()).strip()


def levenshtein_within(a: str, b: str, limit: int) -> int | None:
    """Levenshtein distance of ``a`` and ``b`` if it is ≤ ``limit``, else None (banded dynamic programme)."""
    if abs(len(a) - len(b)) > limit:
        return None
    if len(a) > len(b):
        a, b = b, a
    big = limit + 1
    previous = [j if j <= limit else big for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        current = [big] * (len(b) + 1)
        current[0] = i if i <= limit else big
        ca = a[i - 1]
        for j in range(lo, hi + 1):
            cost = previous[j - 1] + (ca != b[j - 1])
            current[j] = min(cost, previous[j] + 1, current[j - 1] + 1, big)
        if min(current[lo - 1:hi + 1]) > limit:
            return None
        previous = current
    return previous[len(b)] if previous[len(b)] <= limit else None


def edit_similarity(a: str, b: str) -> float:
    """``1 - levenshtein(a, b) / max(len(a), len(b))`` (1.0 for two empty strings)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein_within(a, b, longest) / longest


def _histograms(texts: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(_ALPHABET)}
    out = np.zeros((len(texts), len(_ALPHABET) + 1), dtype=np.int32)
    for row, text in enumerate(texts):
        for c in text:
            out[row, index.get(c, len(_ALPHABET))] += 1
    return out


class TrainingReportIndex:
    """Normalised training reports, searchable for near copies of a generated report."""

    def __init__(self, training_reports: Sequence[str], threshold: float = COPY_THRESHOLD):
        unique = sorted(set(normalise(t) for t in training_reports), key=len)
        self.threshold = threshold
        self.reports = unique
        self.exact = set(unique)
        self.lengths = [len(t) for t in unique]
        self.histograms = _histograms(unique)

    def nearest_copy(self, text: str) -> str | None:
        """A training report with edit similarity ≥ threshold to ``text`` (normalised), or None."""
        text = normalise(text)
        if text in self.exact:
            return text
        n = len(text)
        # similarity ≥ t  ⇔  distance ≤ (1 - t)·max(n, m); m ≤ n / t bounds the band from above.
        lo = bisect.bisect_left(self.lengths, int(np.floor(n * self.threshold)))
        hi = bisect.bisect_right(self.lengths, int(np.ceil(n / self.threshold)))
        if lo >= hi:
            return None
        own = _histograms([text])[0]
        lower_bound = np.abs(self.histograms[lo:hi] - own).sum(axis=1) / 2
        longest = np.maximum(n, np.asarray(self.lengths[lo:hi]))
        limits = np.floor((1 - self.threshold) * longest + 1e-9).astype(int)
        for offset in np.flatnonzero(lower_bound <= limits):
            candidate = self.reports[lo + offset]
            if levenshtein_within(text, candidate, int(limits[offset])) is not None:
                return candidate
        return None


def guard_texts(sections) -> list[str]:
    """The texts a generated report is checked against, from report sections (study_id, findings, impression): each
    findings, each impression and each findings + impression, non-empty."""
    import pandas as pd

    both = (sections["findings"].fillna("") + " " + sections["impression"].fillna("")).str.strip()
    return [t for t in pd.concat([sections["findings"], sections["impression"], both]).dropna().tolist() if t.strip()]


def report_guards(generated: Sequence[str], training_reports: Sequence[str] | None, threshold: float = COPY_THRESHOLD) -> dict:
    """``distinct_share`` and, with training reports, ``copy_share`` (verbatim or edit similarity ≥ threshold)."""
    from cxr_irgen.utils.progress import progress_bar

    normalised = [normalise(g) for g in generated]
    out = {"n_generated": len(generated), "distinct_share": len(set(normalised)) / len(normalised) if normalised else float("nan")}
    if training_reports is not None:
        index = TrainingReportIndex(training_reports, threshold)
        copies = [index.nearest_copy(g) is not None for g in progress_bar(normalised, desc="copy guard", dynamic_ncols=True, leave=False)]
        out["copy_share"] = float(np.mean(copies)) if copies else float("nan")
        out["copy_threshold"] = f"normalised edit similarity >= {threshold}"
        out["n_training_reports"] = len(index.reports)
    return out
