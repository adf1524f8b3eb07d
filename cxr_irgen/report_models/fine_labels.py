"""Fine-grained labels for the FVE classifier: the in-house labeler's positive mentions with their modifiers.

A report's classes are, for every observation the labeler finds *positive* in a clause, the
observation itself (``Pleural Effusion``) and the observation with each modifier word of the
clause (``Pleural Effusion|small``, ``Pleural Effusion|left``). Modifiers come from a fixed
lexicon by kind (severity, size, laterality, location, chronicity). A class counts once per
report; classes kept are those in at least ``min_count`` reports (paper: 100 on MIMIC → 410),
ordered by count (descending), then name, so the list is a function of the reports alone.

    classes = FineLabels.build(train_reports, min_count=100)
    targets = classes.matrix(reports)          # (N, C) float32 in {0, 1}
    classes.save(run_dir)                       # fine_classes.csv: class, count
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from cxr_irgen.data.labels import CHEXPERT_LABELS, POSITIVE
from cxr_irgen.errors import UserError
from cxr_irgen.text.labeler import PATTERNS, classify_mention, normalise, split_clauses

MODIFIERS: dict[str, tuple[str, ...]] = {
    "severity": ("minimal", "mild", "moderate", "severe", "marked", "trace", "extensive", "subtle"),
    "size": ("tiny", "small", "large", "massive"),
    "laterality": ("left", "right", "bilateral", "bibasilar", "unilateral"),
    "location": ("upper", "middle", "lower", "apical", "basilar", "basal", "perihilar", "hilar", "retrocardiac",
                 "lingular", "costophrenic", "subsegmental", "interstitial", "peripheral", "central"),
    "chronicity": ("new", "acute", "chronic", "old", "stable", "unchanged", "persistent", "increased", "decreased",
                   "improved", "improving", "worsened", "worsening", "resolving", "healed"),
}
_MODIFIER = re.compile(r"\b(" + "|".join(w for words in MODIFIERS.values() for w in words) + r")\b")
CLASSES_FILE = "fine_classes.csv"
SEPARATOR = "|"


def report_classes(text: str) -> set[str]:
    """The fine-grained classes of one report (observation, and observation|modifier per modifier in the clause)."""
    found: set[str] = set()
    if not isinstance(text, str) or not text.strip():
        return found
    for clause in split_clauses(normalise(text)):
        if not PATTERNS.any_mention.search(clause):
            continue
        modifiers = sorted(set(_MODIFIER.findall(clause)))
        for index, pattern in PATTERNS.findings:
            if any(classify_mention(clause, m.start(), m.end()) == POSITIVE for m in pattern.finditer(clause)):
                name = CHEXPERT_LABELS[index]
                found.add(name)
                found.update(f"{name}{SEPARATOR}{word}" for word in modifiers)
    return found


@dataclass(frozen=True)
class FineLabels:
    """The kept class names and the number of training reports each occurs in."""

    classes: tuple[str, ...]
    counts: tuple[int, ...]

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int) -> "FineLabels":
        counts = Counter(c for text in texts for c in report_classes(text))
        kept = sorted((c for c, n in counts.items() if n >= int(min_count)), key=lambda c: (-counts[c], c))
        if not kept:
            raise UserError(f"no fine-grained class occurs in {min_count} reports: lower fine_labels.min_count")
        return cls(tuple(kept), tuple(counts[c] for c in kept))

    def __len__(self) -> int:
        return len(self.classes)

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) float32: 1 where the report has the class."""
        column = {c: i for i, c in enumerate(self.classes)}
        out = np.zeros((len(texts), len(self.classes)), dtype=np.float32)
        for row, text in enumerate(texts):
            for c in report_classes(text):
                if c in column:
                    out[row, column[c]] = 1.0
        return out

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CLASSES_FILE
        pd.DataFrame({"class": self.classes, "count": self.counts}).to_csv(path, index=False)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "FineLabels":
        path = Path(directory) / CLASSES_FILE
        if not path.is_file():
            raise UserError(f"no {CLASSES_FILE} in {directory}: not an FVE encoder run")
        table = pd.read_csv(path)
        return cls(tuple(table["class"].astype(str)), tuple(int(n) for n in table["count"]))
