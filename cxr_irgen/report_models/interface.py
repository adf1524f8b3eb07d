"""One interface for every report generator: images → reports, batched and seeded.

    reports = generator(images, batch_size=16, seed=0, num_beams=4)        # images (B, 1, H, W) in [0, 1]
    generator.save_pretrained("exported/")

A saved generator is a directory with ``report_generator.json`` (``{"kind": ...}`` plus what
that kind records) next to its weights. Each kind registers its class with
``@register_report_generator("kind")``; :func:`cxr_irgen.report_models.factory.load_report_generator`
reads the kind and calls that class's ``from_pretrained``.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from cxr_irgen.errors import UserError
from cxr_irgen.utils.registry import Registry

GENERATOR_FILE = "report_generator.json"
RUN_SUBDIR = "report_model"
# "cxr-irgen" is the kind CXR-IRGen language runs recorded before it was named "cxr-irgen-language"
REPORT_GENERATORS = Registry("report generator", aliases={"cxr-irgen": "cxr-irgen-language"})


def register_report_generator(kind: str):
    """Class decorator: ``kind`` in ``report_generator.json`` loads with this class."""

    def add(cls: type["ReportGenerator"]) -> type["ReportGenerator"]:
        cls.kind = kind
        return REPORT_GENERATORS.register(kind)(cls)

    return add


class ReportGenerator(abc.ABC):
    """Images (B, 1, H, W) grayscale in [0, 1] → one report (str) per image.

    Subclasses implement :meth:`generate` (one batch, already on the device), :meth:`to`,
    :attr:`device`, :meth:`save_pretrained` and :meth:`from_pretrained`, and set
    ``image_size`` (the side images are read at).
    """

    kind: ClassVar[str] = ""
    image_size: int

    @abc.abstractmethod
    def generate(self, images: torch.Tensor, **decode: Any) -> list[str]:
        """Reports for one batch (B, 1, H, W) on :attr:`device`; ``decode`` as in :meth:`__call__`."""

    @abc.abstractmethod
    def decoding_settings(self, **decode: Any) -> dict:
        """The full decoding config :meth:`__call__` uses with these ``decode`` options (recorded by generate)."""

    @abc.abstractmethod
    def to(self, device: torch.device | str) -> "ReportGenerator":
        """Move every module to ``device``; returns self."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where the modules are."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write everything :meth:`from_pretrained` needs (with ``report_generator.json``) to ``directory``."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, directory: str | Path) -> "ReportGenerator":
        """Load what :meth:`save_pretrained` wrote."""

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "ReportGenerator":
        """The generator a training run saved (in the run dir or its ``report_model/``)."""
        return cls.from_pretrained(find_generator_dir(run_dir))

    def write_kind(self, directory: str | Path, **record: Any) -> Path:
        """Write ``report_generator.json`` = ``{"kind": self.kind, **record}`` into ``directory``."""
        path = Path(directory) / GENERATOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": self.kind, **record}, indent=2))
        return path

    @property
    def reads_labels(self) -> bool:
        """Whether :meth:`generate` also takes ``labels``, the requested CheXpert vectors (B, 14) of generated images."""
        return False

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 16, seed: int = 0, labels: torch.Tensor | None = None, **decode: Any) -> list[str]:
        """One report per image, ``batch_size`` images at a time, under ``seed`` (same input → same reports).

        ``labels`` (B, 14): label vectors, only for a generator that :attr:`reads_labels`. ``decode`` are the decoding
        options the kind supports; all kinds take ``num_beams`` and ``max_length`` (None: the model's saved default);
        ``do_sample``/``top_p`` only where the kind samples (others raise on ``do_sample=True``); beam-search kinds also
        ``length_penalty`` and ``block_trigrams``.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise UserError(f"images must be (B, 1, H, W) grayscale in [0, 1], got shape {tuple(images.shape)}")
        if labels is not None and not self.reads_labels:
            raise UserError(f"the {self.kind} report generator writes from images alone: it takes no label vectors")
        if labels is not None and len(labels) != len(images):
            raise UserError(f"{len(labels)} label vectors for {len(images)} images: give one per image")
        devices = [self.device] if self.device.type == "cuda" else []
        chunks = images.split(int(batch_size))
        label_chunks = torch.as_tensor(labels, dtype=torch.float32).split(int(batch_size)) if labels is not None else [None] * len(chunks)
        reports: list[str] = []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            for chunk, chunk_labels in zip(chunks, label_chunks):
                extra = {} if chunk_labels is None else {"labels": chunk_labels}
                reports += self.generate(chunk.to(self.device), **extra, **decode)
        return reports


def find_generator_dir(path: str | Path) -> Path:
    """``path`` or ``path/report_model`` when it holds ``report_generator.json``; a UserError naming both otherwise."""
    path = Path(path)
    for candidate in (path, path / RUN_SUBDIR):
        if (candidate / GENERATOR_FILE).is_file():
            return candidate
    raise UserError(f"{path} holds no report generator ({GENERATOR_FILE} in it or in {RUN_SUBDIR}/): pass the run dir of a report-model training run")


def generator_kind(directory: str | Path) -> str:
    """The ``kind`` recorded in ``directory/report_generator.json``."""
    path = Path(directory) / GENERATOR_FILE
    try:
        return str(json.loads(path.read_text())["kind"])
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path}: not a readable report-generator record ({err})") from None
