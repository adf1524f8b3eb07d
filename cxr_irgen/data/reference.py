"""Reference-image lookup (DESIGN 1.1): a train image whose labels match the query's.

Rules, in order, for a query label vector ``q``:

1. an image whose full label vector equals ``q`` (same :func:`~cxr_irgen.data.labels.label_key`);
2. else one with the same positive set (same :func:`~cxr_irgen.data.labels.positive_key`,
   other entries may differ);
3. else one whose positive set is closest: smallest Hamming distance between positive
   masks, all tied sets pooled.

``exclude`` (the target image itself during training) is never returned. The choice among
candidates is a hash of ``seed`` (spread over the candidates, the same for the same seed;
when it hits ``exclude`` the next candidate is taken). Rules 1 and 2 are dict lookups;
rule 3 scans only the distinct positive sets (about a thousand on MIMIC) once per query
set; fallback candidates are memoised per label key (plain dicts, so the index pickles for
DataLoader workers). A lookup costs about 1-5 µs (see ``benchmarks/data_index.py``).
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

    def __init__(self, dicom_ids: list[str], labels: np.ndarray, image_paths: list[str]):
        if not len(dicom_ids):
            raise UserError("no images to choose reference images from: the train split of the data is empty")
        labels = canonical_labels(labels).reshape(len(dicom_ids), NUM_LABELS)
        self.dicom_ids = list(dicom_ids)
        self._paths = dict(zip(self.dicom_ids, image_paths))
        self._by_label: dict[bytes, list[int]] = {}
        for row, key in enumerate(map(bytes, labels)):
            self._by_label.setdefault(key, []).append(row)
        masks = positive_masks(labels)
        order = np.argsort(masks, kind="stable")
        self._masks, starts = np.unique(masks[order], return_index=True)
        self._by_positive: dict[int, np.ndarray] = dict(zip(self._masks.tolist(), np.split(order, starts[1:])))
        self._fallback_memo: dict[bytes, tuple[np.ndarray, ...]] = {}
        self._closest_memo: dict[int, np.ndarray] = {}
        log.info("reference index: %d images, %d distinct label vectors, %d distinct positive sets", len(self.dicom_ids), len(self._by_label), len(self._masks))

    @classmethod
    def from_index(cls, index: pd.DataFrame, split: str | None = "train") -> "ReferenceIndex":
        """Build from an index table (:func:`cxr_irgen.data.mimic.load_index` schema), keeping ``split`` rows (None: all)."""
        if split is not None:
            index = index[index["split"] == split]
        return cls(index["dicom_id"].tolist(), index[list(CHEXPERT_LABELS)].to_numpy(np.float32), index["image_path"].tolist())

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def image_path(self, dicom_id: str) -> str:
        """Absolute image path of a dicom id of this index."""
        try:
            return self._paths[dicom_id]
        except KeyError:
            raise UserError(f"dicom_id {dicom_id!r} is not in the reference index") from None

    def lookup(self, labels: np.ndarray, exclude: str | None = None, seed: int = 0) -> str:
        """The dicom id of a reference image for ``labels`` (14,), never ``exclude``; same seed → same choice."""
        try:
            key = labels.tobytes()  # hot path: a float32 vector with the usual NaN bits
        except AttributeError:
            key = b""
        rows = self._by_label.get(key)
        if rows is None:
            key = canonical_labels(labels).tobytes()
            rows = self._by_label.get(key)
        if rows is not None:
            n = len(rows)
            i = (((seed * _GOLDEN) & _MASK64) >> 32) % n  # seeded_choice, inlined
            dicom_id = self.dicom_ids[rows[i]]
            if dicom_id != exclude:
                return dicom_id
            if n > 1:
                return self.dicom_ids[rows[(i + 1) % n]]
        for rows in self._fallback_rows(key):
            choice = self._pick(rows, exclude, seed)
            if choice is not None:
                return choice
        raise UserError(f"no reference image other than {exclude!r}: the reference index has {len(self)} image(s)")

    def _pick(self, rows: list[int] | np.ndarray, exclude: str | None, seed: int) -> str | None:
        i = seeded_choice(seed, len(rows))
        dicom_id = self.dicom_ids[rows[i]]
        if dicom_id == exclude:
            if len(rows) == 1:
                return None
            dicom_id = self.dicom_ids[rows[(i + 1) % len(rows)]]
        return dicom_id

    def _fallback_rows(self, key: bytes) -> tuple[np.ndarray, ...]:
        """Candidate rows of rules 2 and 3 for a canonical label key (non-empty arrays only; memoised)."""
        rows = self._fallback_memo.get(key)
        if rows is None:
            mask = int(positive_masks(np.frombuffer(key, dtype=np.float32)))
            rows = tuple(r for r in (self._by_positive.get(mask), self._closest(mask)) if r is not None and len(r))
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
