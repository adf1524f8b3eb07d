"""Reports from images: frozen representation → prior → report embedding → stage-1 decoder.

    generator = LanguageChain.from_run_dir("outputs/train_language/PRIOR_RUN")
    reports = generator(images)                       # images (B, 1, H, W) in [0, 1]
    table = generate_reports_for_folder("my_pngs/", generator, out_csv="reports.csv")

A prior run's ``prior/generator.json`` records the stage-1 autoencoder directory and the
image representation (``prior.input``, ``image_size`` and the encoder configs), so the run
dir alone rebuilds the whole chain; :meth:`LanguageChain.from_run_dirs` takes both
directories explicitly (e.g. after moving them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from omegaconf import OmegaConf

from cxr_irgen.data.imageio import IMAGE_SUFFIXES
from cxr_irgen.errors import UserError
from cxr_irgen.language.autoencoder import ReportAutoencoder
from cxr_irgen.language.prior import PRIOR_FILE, PriorViT
from cxr_irgen.language.representation import ImageRepresentation, build_image_representation
from cxr_irgen.vision.loading import freeze

GENERATOR_FILE = "generator.json"


def write_generator_config(prior_dir: Path, autoencoder_dir: Path, prior_cfg, image_representation: ImageRepresentation) -> Path:
    """Record in ``prior_dir`` which autoencoder and which image representation the prior was trained with; a ``classifier``
    encoder by its absolute run dir (or XRV weights file) and the SHA-1 of its weights (``DenseNetFeatures.record``)."""
    keys = ("input", "image_size", "image_encoder", "vae")
    representation = {k: OmegaConf.to_container(prior_cfg[k], resolve=True) if OmegaConf.is_config(prior_cfg[k]) else prior_cfg[k] for k in keys}
    if image_representation.kind == "classifier":
        representation["classifier"] = image_representation.encoder.record
    path = Path(prior_dir) / GENERATOR_FILE
    path.write_text(json.dumps({"autoencoder": str(Path(autoencoder_dir).resolve()), "representation": representation}, indent=2))
    return path


def _prior_dir(path: Path) -> Path:
    path = Path(path)
    for candidate in (path, path / "prior"):
        if (candidate / PRIOR_FILE).exists():
            return candidate
    raise UserError(f"{path} holds no trained prior ({PRIOR_FILE}): pass the run dir of `cxr-irgen train-language stage=prior`")


class LanguageChain:
    """Images (B, 1, H, W) in [0, 1] → reports, in batches; every module frozen and in eval mode."""

    def __init__(self, autoencoder: ReportAutoencoder, prior: PriorViT, representation: ImageRepresentation):
        if representation.kind != prior.input or tuple(representation.input_shape) != prior.input_shape:
            raise UserError(f"the prior reads {prior.input} {prior.input_shape} but the representation gives {representation.kind} {representation.input_shape}")
        if prior.settings["output_dim"] != autoencoder.embedding_dim:
            raise UserError(f"the prior predicts {prior.settings['output_dim']}-d embeddings but the autoencoder's are {autoencoder.embedding_dim}-d: wrong stage-1 run?")
        self.autoencoder = freeze(autoencoder)
        self.prior = freeze(prior)
        self.representation = representation

    @classmethod
    def from_run_dirs(cls, autoencoder_dir: str | Path | None, prior_dir: str | Path) -> "LanguageChain":
        """Stage-1 and stage-2 run dirs; ``autoencoder_dir=None`` uses the one recorded by the prior run
        (or ``autoencoder/`` inside the prior run dir when one run dir holds both)."""
        prior_dir = _prior_dir(Path(prior_dir))
        recorded = json.loads((prior_dir / GENERATOR_FILE).read_text())
        if autoencoder_dir is None:
            autoencoder_dir = prior_dir.parent / "autoencoder" if (prior_dir.parent / "autoencoder").is_dir() else recorded["autoencoder"]
        representation = build_image_representation(OmegaConf.create(recorded["representation"]))
        return cls(ReportAutoencoder.from_pretrained(autoencoder_dir), PriorViT.from_pretrained(prior_dir), representation)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "LanguageChain":
        """A prior run dir (its ``generator.json`` names the autoencoder)."""
        return cls.from_run_dirs(None, run_dir)

    def to(self, device: torch.device | str) -> "LanguageChain":
        for module in (self.autoencoder, self.prior, self.representation):
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.autoencoder.device

    @property
    def reads_labels(self) -> bool:
        """Whether the prior also reads the CheXpert label vector of each image (``prior.labels=true``)."""
        return self.prior.reads_labels

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1], optional label vectors (B, 14) → predicted report embeddings (B, d)."""
        return self.prior(self.representation(images.to(self.device)), labels).float()

    def decoding_settings(self, num_beams: int = 1, do_sample: bool = False, top_p: float = 0.9, max_length: int = 128, no_repeat_ngram_size: int = 0) -> dict:
        """The full decoding config :meth:`__call__` uses with these arguments (recorded in each generate sidecar)."""
        return self.autoencoder.decoding_settings(max_length=max_length, num_beams=num_beams, do_sample=do_sample, top_p=top_p,
                                                  no_repeat_ngram_size=no_repeat_ngram_size)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        batch_size: int = 16,
        num_beams: int = 1,
        do_sample: bool = False,
        top_p: float = 0.9,
        max_length: int = 128,
        no_repeat_ngram_size: int = 0,
        labels: torch.Tensor | None = None,
    ) -> list[str]:
        """One report per image; greedy (default), beam (``num_beams``) or nucleus (``do_sample``, ``top_p``) decoding.
        ``labels`` (B, 14): the requested CheXpert vectors, for a prior that :attr:`reads_labels` (None: not mentioned)."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise UserError(f"images must be (B, 1, H, W) grayscale in [0, 1], got shape {tuple(images.shape)}")
        chunks = images.split(int(batch_size))
        label_chunks = labels.split(int(batch_size)) if labels is not None else [None] * len(chunks)
        reports: list[str] = []
        for chunk, chunk_labels in zip(chunks, label_chunks):
            embeddings = self.embeddings(chunk, chunk_labels)
            reports += self.autoencoder.decode(embeddings, max_length=max_length, num_beams=num_beams, do_sample=do_sample, top_p=top_p,
                                               batch_size=batch_size, no_repeat_ngram_size=no_repeat_ngram_size)
        return reports


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (sorted); a UserError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def generate_reports_for_folder(
    folder: str | Path,
    generator: LanguageChain,
    out_csv: str | Path | None = None,
    batch_size: int = 16,
    **decode_kwargs,
) -> pd.DataFrame:
    """A report for every image in ``folder``: DataFrame (image, report), also written to ``out_csv`` when given.

    ``decode_kwargs`` go to :meth:`LanguageChain.__call__` (num_beams, do_sample, top_p, max_length).
    """
    from cxr_irgen.data.imageio import read_image
    from cxr_irgen.utils.progress import progress_bar

    files = list_images(folder)
    size = generator.representation.image_size
    rows: list[dict] = []
    for start in progress_bar(range(0, len(files), batch_size), desc="reports", dynamic_ncols=True):
        names: Sequence[Path] = files[start : start + batch_size]
        images = torch.stack([read_image(path, size) for path in names])
        reports = generator(images, batch_size=batch_size, **decode_kwargs)
        rows += [{"image": str(path), "report": report} for path, report in zip(names, reports)]
    table = pd.DataFrame(rows)
    if out_csv is not None:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_csv, index=False)
    return table
