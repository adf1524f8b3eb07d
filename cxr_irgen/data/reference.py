"""Reference-image lookup (DESIGN 1.1): a train image whose labels match the query's.

Rules, in order, for a query label vector ``q``:

1. ``exact``: an image whose full label vector equals ``q`` (same :func:`~cxr_irgen.data.labels.label_key`);
2. else ``same_positives``: one with the same positive set (same
   :func:`~cxr_irgen.data.labels.positive_key`, other entries may differ);
3. else ``closest``: one whose positive set is closest: smallest Hamming distance between
   positive masks, all tied sets pooled.

``exclude`` (the target image during training) is never returned, and neither is any image
sharing its ``exclude_rule`` group: ``study`` (default: another view of the same study would
let the model copy the target), ``patient`` (any study of the same subject), ``image`` (the
target alone) or ``none`` (nothing excluded, as in the released code). A rule whose candidates
are all excluded passes to the next rule. The choice among the remaining candidates is
uniform and seeded (a hash of ``seed``; the same for the same seed): when the first draw hits
an excluded image, a second draw is made among the allowed candidates only, so no candidate is
favoured. Rules 1 and 2 are dict lookups; rule 3 scans only the distinct positive sets (about a
thousand on MIMIC) once per query set; fallback candidates are memoised per label key (plain
dicts, so the index pickles for DataLoader workers). A lookup costs about 1-5 µs (see
``benchmarks/data_index.py``). :meth:`ReferenceIndex.rule_counts` tells how often each rule
fires for a set of targets (logged by ``train-vision``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cxr_irgen.data.labels import CHEXPERT_LABELS, NUM_LABELS
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BITS = 1 << np.arange(NUM_LABELS, dtype=np.int64)
RULES = ("exact", "same_positives", "closest")
EXCLUDE_RULES = {"study": "study_id", "patient": "subject_id", "image": "dicom_id", "none": None}


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """(…, 14) float32 with one NaN bit pattern and no negative zero, so equal vectors have equal bytes."""
    labels = np.asarray(labels, dtype=np.float32)
    return np.where(np.isnan(labels), np.float32(np.nan), labels + np.float32(0.0)).astype(np.float32)


def positive_masks(labels: np.ndarray) -> np.ndarray:
    """(N, 14) labels → (N,) int64 bit masks of the positive observations (bit i = observation i is 1.0)."""
    return ((np.asarray(labels) == 1.0) * _BITS).sum(axis=-1)


def mix64(x: int) -> int:
    """splitmix64 finaliser: a well-mixed 64-bit integer from any integer (used to derive per-item seeds)."""
    z = (x * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def seeded_choice(seed: int, n: int) -> int:
    """An index in [0, n) from ``seed`` by Fibonacci hashing (high bits of seed × 2^64/φ): spreads even consecutive seeds, < 1 µs."""
    return (((seed * _GOLDEN) & _MASK64) >> 32) % n


class ReferenceIndex:
    """Hash index from label vectors to candidate reference images (dicom ids).

    ``_by_label`` is keyed by the canonical float32 bytes of a label vector (one key per
    :func:`~cxr_irgen.data.labels.label_key`, but ~20x cheaper to compute), ``_by_positive``
    by the positive bit mask (:func:`~cxr_irgen.data.labels.positive_key`).
    """

    def __init__(self, dicom_ids: list[str], labels: np.ndarray, image_paths: list[str], groups: list | None = None, exclude_rule: str = "image"):
        """``groups``: one group key per image (its study or subject id) for ``exclude_rule`` study/patient."""
        if not len(dicom_ids):
            raise UserError("no images to choose reference images from: the train split of the data is empty")
        if exclude_rule not in EXCLUDE_RULES:
            raise UserError(f"reference.exclude={exclude_rule!r}: use one of {', '.join(EXCLUDE_RULES)}")
        labels = canonical_labels(labels).reshape(len(dicom_ids), NUM_LABELS)
        self.dicom_ids = list(dicom_ids)
        self.exclude_rule = exclude_rule
        self._paths = dict(zip(self.dicom_ids, image_paths))
        self._row_of = {d: i for i, d in enumerate(self.dicom_ids)}
        if exclude_rule in ("study", "patient") and groups is None:
            raise UserError(f"reference.exclude={exclude_rule} needs the {EXCLUDE_RULES[exclude_rule]} of every reference image")
        if exclude_rule == "none":
            self._group: list[int] | None = None
        else:
            self._group = pd.factorize(pd.Series([str(g) for g in groups]))[0].tolist() if exclude_rule in ("study", "patient") else list(range(len(self.dicom_ids)))
        self._by_label: dict[bytes, list[int]] = {}
        for row, key in enumerate(map(bytes, labels)):
            self._by_label.setdefault(key, []).append(row)
        masks = positive_masks(labels)
        order = np.argsort(masks, kind="stable")
        self._masks, starts = np.unique(masks[order], return_index=True)
        self._by_positive: dict[int, np.ndarray] = dict(zip(self._masks.tolist(), np.split(order, starts[1:])))
        self._fallback_memo: dict[bytes, tuple[tuple[str, np.ndarray], ...]] = {}
        self._closest_memo: dict[int, np.ndarray] = {}
        log.info("reference index: %d images, %d distinct label vectors, %d distinct positive sets", len(self.dicom_ids), len(self._by_label), len(self._masks))

    @classmethod
    def from_index(cls, index: pd.DataFrame, split: str | None = "train", exclude_rule: str = "study") -> "ReferenceIndex":
        """Build from an index table (:func:`cxr_irgen.data.mimic.load_index` schema), keeping ``split`` rows (None: all)."""
        if split is not None:
            index = index[index["split"] == split]
        column = EXCLUDE_RULES.get(exclude_rule)
        groups = index[column].tolist() if column in ("study_id", "subject_id") and column in index.columns else None
        return cls(index["dicom_id"].tolist(), index[list(CHEXPERT_LABELS)].to_numpy(np.float32), index["image_path"].tolist(), groups, exclude_rule)

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def image_path(self, dicom_id: str) -> str:
        """Absolute image path of a dicom id of this index."""
        try:
            return self._paths[dicom_id]
        except KeyError:
            raise UserError(f"dicom_id {dicom_id!r} is not in the reference index") from None

    def target_group(self, exclude: str | None) -> int | None:
        """The group (study, patient or image) whose images may not be the reference of target ``exclude``."""
        row = self._row_of.get(exclude) if exclude is not None and self._group is not None else None
        return None if row is None else self._group[row]

    def _allowed(self, row: int, group: int | None) -> bool:
        return group is None or self._group[row] != group

    def candidates(self, labels: np.ndarray) -> tuple[tuple[str, np.ndarray | list[int]], ...]:
        """``(rule, candidate rows)`` of each rule that has candidates, in order (exclusion not applied)."""
        key = canonical_labels(labels).tobytes()
        exact = self._by_label.get(key)
        return (((RULES[0], exact),) if exact is not None else ()) + self._fallback_rows(key)

    def lookup(self, labels: np.ndarray, exclude: str | None = None, seed: int = 0) -> str:
        """The dicom id of a reference image for ``labels`` (14,), never ``exclude`` nor its group; same seed → same choice."""
        try:
            key = labels.tobytes()  # hot path: a float32 vector with the usual NaN bits
        except AttributeError:
            key = b""
        rows = self._by_label.get(key)
        if rows is None:
            key = canonical_labels(labels).tobytes()
            rows = self._by_label.get(key)
        group = self.target_group(exclude)
        if rows is not None:
            choice = self._pick(rows, group, seed)
            if choice is not None:
                return choice
        for _, rows in self._fallback_rows(key):
            choice = self._pick(rows, group, seed)
            if choice is not None:
                return choice
        raise UserError(f"no reference image other than {exclude!r} and its {self.exclude_rule} (reference.exclude): the reference index has {len(self)} image(s)")

    def rule(self, labels: np.ndarray, exclude: str | None = None) -> str:
        """Which rule (:data:`RULES`) supplies the reference of ``labels`` for target ``exclude`` (seed-independent)."""
        group = self.target_group(exclude)
        for name, rows in self.candidates(labels):
            if any(self._allowed(int(r), group) for r in rows):
                return name
        raise UserError(f"no reference image other than {exclude!r} and its {self.exclude_rule} (reference.exclude)")

    def rule_counts(self, labels: np.ndarray, excludes: list[str | None]) -> dict[str, int]:
        """How many of the targets (labels (N, 14), their dicom ids) get their reference from each rule."""
        counts = dict.fromkeys(RULES, 0)
        for vector, exclude in zip(np.asarray(labels, dtype=np.float32), excludes):
            counts[self.rule(vector, exclude)] += 1
        return counts

    def _pick(self, rows: list[int] | np.ndarray, group: int | None, seed: int) -> str | None:
        """A seeded uniform choice among ``rows`` outside ``group`` (None when all are in it)."""
        row = int(rows[(((seed * _GOLDEN) & _MASK64) >> 32) % len(rows)])  # seeded_choice, inlined
        if self._allowed(row, group):
            return self.dicom_ids[row]
        allowed = [int(r) for r in rows if self._allowed(int(r), group)]
        if not allowed:
            return None
        return self.dicom_ids[allowed[seeded_choice(mix64(seed), len(allowed))]]

    def _fallback_rows(self, key: bytes) -> tuple[tuple[str, np.ndarray], ...]:
        """``(rule, candidate rows)`` of rules 2 and 3 for a canonical label key (non-empty only; memoised)."""
        rows = self._fallback_memo.get(key)
        if rows is None:
            mask = int(positive_masks(np.frombuffer(key, dtype=np.float32)))
            named = zip(RULES[1:], (self._by_positive.get(mask), self._closest(mask)))
            rows = tuple((rule, r) for rule, r in named if r is not None and len(r))
            self._fallback_memo[key] = rows
        return rows

    def _closest(self, mask: int) -> np.ndarray:
        """Rows of every positive set at the smallest nonzero Hamming distance from ``mask`` (memoised)."""
        if mask not in self._closest_memo:
            others = self._masks[self._masks != mask]
            rows = others
            if len(others):
                distance = np.unpackbits((others ^ mask).view(np.uint8)).reshape(len(others), -1).sum(axis=1)
                rows = np.concatenate([self._by_positive[m] for m in others[distance == distance.min()].tolist()])
            self._closest_memo[mask] = rows
        return self._closest_memo[mask]
