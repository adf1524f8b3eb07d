"""Torch datasets over an index table, deterministic per (seed, epoch, item) so a resumed run equals an uninterrupted one.

* :class:`VisionDataset`: image + reference image + prompt + labels (vision module).
* :class:`ReportTextDataset`: report strings (language stage 1).
* :class:`ImageReportDataset`: image + report text (language stage 2 and its test set).
* :class:`StudyReportDataset`: up to K images of one study + its report text (ifcc's multi-image input).
* :func:`collate`: stacks tensors, lists everything else.

With ``skip_bad=True`` an unreadable image is replaced by the next readable item (item
``i+1``, ``i+2``, … wrapping around), so the replacement is deterministic; the distinct
bad files are kept in ``bad_files`` (per process: DataLoader workers keep their own) and
:meth:`log_bad_files` logs them. With ``skip_bad=False`` the
:class:`~cxr_irgen.data.imageio.BadImageError` naming the file propagates.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cxr_irgen.data.imageio import BadImageError, read_image
from cxr_irgen.data.labels import CHEXPERT_LABELS, labels_to_prompt
from cxr_irgen.data.reference import ReferenceIndex, mix64
from cxr_irgen.data.selections import stage1_texts, with_sections
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for item ``index`` of ``epoch`` of a run seeded with ``seed`` (no global RNG involved)."""
    return mix64(mix64(mix64(seed) + epoch) + index)


class _ImageItems(Dataset):
    """Shared skip-bad logic for datasets whose items read image files."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.bad_files: set[str] = set()

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(len(self)):
            try:
                return self._load((index + offset) % len(self))
            except BadImageError as err:
                if not self.skip_bad:
                    raise
                if err.args[0] not in self.bad_files:
                    log.warning("skipping unreadable image (data.skip_bad=true): %s", err)
                self.bad_files.add(err.args[0])
        raise UserError(f"every one of the {len(self)} images is unreadable, e.g. {next(iter(self.bad_files))}")

    @property
    def bad_count(self) -> int:
        """How many distinct unreadable files were skipped so far (in this process)."""
        return len(self.bad_files)

    def log_bad_files(self) -> None:
        """Log the number of skipped unreadable files (call at the end of a run)."""
        if self.bad_files:
            log.warning("skipped %d unreadable image file(s), e.g. %s", self.bad_count, sorted(self.bad_files)[0])


class VisionDataset(_ImageItems):
    """Items of an index table for the vision module.

    Each item: ``pixel_values`` (1, S, S) in [0, 1], ``reference_pixels`` (1, S, S) in [0, 1]
    (zeros when ``reference`` is None), ``prompt`` str, ``labels`` (14,) float32 (NaN kept),
    ``dicom_id`` str, ``reference_id`` str ('' without reference). The reference is
    ``reference.lookup(labels, exclude=own dicom_id, seed=item_seed(seed, epoch, index))``
    with ``epoch = epoch_fn()`` (0 when ``epoch_fn`` is None).
    """

    def __init__(
        self,
        index: pd.DataFrame,
        image_size: int,
        reference: ReferenceIndex | None,
        seed: int = 0,
        skip_bad: bool = False,
        epoch_fn: Callable[[], int] | None = None,
    ):
        super().__init__(skip_bad)
        if not len(index):
            raise UserError("the vision dataset is empty: no images selected (check data.root and the split/view columns)")
        self.dicom_ids = index["dicom_id"].tolist()
        self.image_paths = index["image_path"].tolist()
        self.labels = index[list(CHEXPERT_LABELS)].to_numpy(np.float32)
        self.image_size, self.reference, self.seed, self.epoch_fn = image_size, reference, seed, epoch_fn

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def _load(self, index: int) -> dict[str, Any]:
        labels = self.labels[index]
        pixels = read_image(self.image_paths[index], self.image_size)
        reference_id, reference_pixels = "", torch.zeros_like(pixels)
        if self.reference is not None:
            epoch = self.epoch_fn() if self.epoch_fn else 0
            reference_id = self.reference.lookup(labels, exclude=self.dicom_ids[index], seed=item_seed(self.seed, epoch, index))
            reference_pixels = read_image(self.reference.image_path(reference_id), self.image_size)
        return {
            "pixel_values": pixels,
            "reference_pixels": reference_pixels,
            "prompt": labels_to_prompt(labels),
            "labels": torch.from_numpy(labels.copy()),
            "dicom_id": self.dicom_ids[index],
            "reference_id": reference_id,
        }


class ReportTextDataset(Dataset):
    """Report strings (language stage 1): item ``i`` is ``texts[i]``."""

    def __init__(self, texts: list[str]):
        self.texts = list(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]


class ImageReportDataset(_ImageItems):
    """Image/report pairs: ``pixel_values`` (1, S, S) in [0, 1], ``text`` str (the ``variant`` of the report), ``dicom_id``.

    Rows of ``index`` whose study has no ``variant`` text in ``sections`` are dropped; with
    ``findings+impression`` an image with both sections gives two pairs, one per section.
    """

    def __init__(self, index: pd.DataFrame, sections: pd.DataFrame, image_size: int, variant: str = "findings", skip_bad: bool = False):
        super().__init__(skip_bad)
        rows = stage1_texts(with_sections(index, sections), variant)
        if not len(rows):
            raise UserError(f"no image/report pairs with a {variant} text: check the reports under data.root")
        self.dicom_ids = rows["dicom_id"].tolist()
        self.image_paths = rows["image_path"].tolist()
        self.texts = rows["text"].tolist()
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def _load(self, index: int) -> dict[str, Any]:
        return {"pixel_values": read_image(self.image_paths[index], self.image_size), "text": self.texts[index], "dicom_id": self.dicom_ids[index]}


class StudyReportDataset(_ImageItems):
    """Studies with their report: ``pixel_values`` (K, 1, S, S) in [0, 1] (zero rows past the study's images),
    ``image_mask`` (K,) bool, ``text`` str, ``dicom_id`` (the study's images joined by ``+``).

    The rows of ``index`` are grouped by ``study_id``; a study with more than ``max_images`` images keeps the first
    ``max_images`` by ``dicom_id``. Texts as in :class:`ImageReportDataset` (one item per study and text).
    """

    def __init__(self, index: pd.DataFrame, sections: pd.DataFrame, image_size: int, variant: str = "findings", max_images: int = 3, skip_bad: bool = False):
        super().__init__(skip_bad)
        if int(max_images) < 1:
            raise UserError(f"images_per_study={max_images}: give 1 or more (ifcc: up to 3)")
        rows = stage1_texts(with_sections(index, sections), variant)
        if not len(rows):
            raise UserError(f"no image/report pairs with a {variant} text: check the reports under data.root")
        studies = rows.sort_values("dicom_id", kind="stable").groupby(["study_id", "text"], sort=False)
        groups = [group.head(int(max_images)) for _, group in studies]
        self.dicom_ids = ["+".join(g["dicom_id"]) for g in groups]
        self.image_paths = [g["image_path"].tolist() for g in groups]
        self.texts = [g["text"].iloc[0] for g in groups]
        self.image_size, self.max_images = image_size, int(max_images)

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def _load(self, index: int) -> dict[str, Any]:
        paths = self.image_paths[index]
        pixels = torch.zeros(self.max_images, 1, self.image_size, self.image_size)
        for k, path in enumerate(paths):
            pixels[k] = read_image(path, self.image_size)
        mask = torch.arange(self.max_images) < len(paths)
        return {"pixel_values": pixels, "image_mask": mask, "text": self.texts[index], "dicom_id": self.dicom_ids[index]}


def collate(batch: list[Any]) -> Any:
    """Batch items: tensors stacked along a new dim 0, strings and other values as lists; dicts key by key."""
    first = batch[0]
    if isinstance(first, dict):
        return {key: collate([item[key] for item in batch]) for key in first}
    if torch.is_tensor(first):
        return torch.stack(batch)
    return list(batch)
