"""The CXR-IRGen language module (frozen representation → prior → BART decoder) as a :class:`ReportGenerator`.

    generator = CxrIrgenReportGenerator.from_run_dir("outputs/train_language/PRIOR_RUN")
    generator.save_pretrained("exported/")   # autoencoder/ + prior/ (with generator.json) + report_generator.json

Decoding options are the language module's: ``num_beams``, ``do_sample``, ``top_p``, ``max_length``, ``no_repeat_ngram_size``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cxr_irgen.errors import UserError
from cxr_irgen.language.generate import GENERATOR_FILE as PRIOR_GENERATOR_FILE
from cxr_irgen.language.generate import LanguageChain
from cxr_irgen.language.prior import PRIOR_FILE
from cxr_irgen.report_models.interface import ReportGenerator, register_report_generator

LANGUAGE_DEFAULTS = {"num_beams": 1, "do_sample": False, "top_p": 0.9, "max_length": 128, "no_repeat_ngram_size": 0}


def is_prior_run(path: str | Path) -> bool:
    """Whether ``path`` (or ``path/prior``) holds a CXR-IRGen stage-2 prior."""
    path = Path(path)
    return (path / PRIOR_FILE).is_file() or (path / "prior" / PRIOR_FILE).is_file()


@register_report_generator("cxr-irgen-language")
class CxrIrgenReportGenerator(ReportGenerator):
    """Wraps :class:`cxr_irgen.language.generate.LanguageChain` behind the shared interface."""

    def __init__(self, chain: LanguageChain, representation_record: dict):
        self.chain = chain
        self.representation_record = representation_record
        self.image_size = int(chain.representation.image_size)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "CxrIrgenReportGenerator":
        """A prior run dir (its ``generator.json`` names the stage-1 autoencoder) or a saved generator."""
        run_dir = Path(run_dir)
        prior_dir = run_dir if (run_dir / PRIOR_FILE).is_file() else run_dir / "prior"
        if not (prior_dir / PRIOR_GENERATOR_FILE).is_file():
            raise UserError(f"{run_dir} holds no trained prior: pass the run dir of `cxr-irgen train-language stage=prior`")
        record = json.loads((prior_dir / PRIOR_GENERATOR_FILE).read_text())["representation"]
        return cls(LanguageChain.from_run_dir(run_dir), record)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CxrIrgenReportGenerator":
        return cls.from_run_dir(directory)

    def save_pretrained(self, directory: str | Path) -> Path:
        """``autoencoder/``, ``prior/`` (its ``generator.json`` pointing at that autoencoder) and ``report_generator.json``."""
        directory = Path(directory)
        self.chain.autoencoder.save_pretrained(directory / "autoencoder")
        self.chain.prior.save_pretrained(directory / "prior")
        record = {"autoencoder": str((directory / "autoencoder").resolve()), "representation": self.representation_record}
        (directory / "prior" / PRIOR_GENERATOR_FILE).write_text(json.dumps(record, indent=2))
        self.write_kind(directory)
        return directory

    def to(self, device: torch.device | str) -> "CxrIrgenReportGenerator":
        self.chain.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.chain.device

    def _options(self, decode: dict) -> dict:
        unknown = set(decode) - set(LANGUAGE_DEFAULTS)
        if unknown:
            raise UserError(f"the CXR-IRGen language module does not take {sorted(unknown)}; its decoding options: {', '.join(LANGUAGE_DEFAULTS)}")
        return {**LANGUAGE_DEFAULTS, **{k: v for k, v in decode.items() if v is not None}}

    def decoding_settings(self, **decode: Any) -> dict:
        return self.chain.decoding_settings(**self._options(decode))

    @property
    def reads_labels(self) -> bool:
        return self.chain.reads_labels

    def generate(self, images: torch.Tensor, labels: torch.Tensor | None = None, **decode: Any) -> list[str]:
        return self.chain(images, batch_size=len(images), labels=labels, **self._options(decode))

