"""Report generators by name (open_clip's factory, for reports): list the kinds, load a saved one, create a new one.

    list_report_models()                    # ["cxr-irgen-language", "encoder-decoder", "repair"]
    generator = load_report_generator("outputs/train_report_model/RUN")   # any kind of report run
    generator = create_report_model(encoder="dve-tiny", decoder="transformer-tiny", vocab=texts)  # untrained

A run dir works for loading too: the generator is looked for in the run dir itself and in its
``report_model/`` folder; a CXR-IRGen prior run (``train-language stage=prior``) loads through
:mod:`cxr_irgen.report_models.language_adapter`. The modules that define the kinds are imported
here, so each has registered by the time a name is looked up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from cxr_irgen.errors import UserError
from cxr_irgen.report_models import repair  # noqa: F401  (registers "repair")
from cxr_irgen.report_models.interface import GENERATOR_FILE, REPORT_GENERATORS, ReportGenerator, find_generator_dir, generator_kind
from cxr_irgen.report_models.language_adapter import CxrIrgenReportGenerator, is_prior_run
from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model
from cxr_irgen.report_models.vocabulary import Vocabulary


def list_report_models() -> list[str]:
    """The report-generator kinds (``cxr-irgen-language``, ``encoder-decoder``, ``repair``)."""
    return REPORT_GENERATORS.names()


def load_report_generator(path: str | Path) -> ReportGenerator:
    """Any saved report generator or report run dir → its :class:`ReportGenerator` (weights strictly loaded); call it
    with images (B, 1, H, W) in [0, 1] → B report strings."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"report generator {path} does not exist")
    if is_prior_run(path) and not (path / GENERATOR_FILE).is_file():
        return CxrIrgenReportGenerator.from_run_dir(path)
    directory = find_generator_dir(path)
    kind = generator_kind(directory)
    if kind not in REPORT_GENERATORS:
        raise UserError(f"{directory}: unknown report-generator kind {kind!r}; known: {', '.join(list_report_models())}")
    return REPORT_GENERATORS.get(kind).from_pretrained(directory)


def create_report_model(encoder: str, decoder: str, vocab: Vocabulary | Iterable[str], encoder_args: dict | None = None,
                        decoder_args: dict | None = None, projection_dropout: float = 0.1, decoding: dict | None = None) -> EncoderDecoderGenerator:
    """An untrained ``encoder-decoder`` generator: encoder and decoder by YAML name (:func:`list_report_encoders`,
    :func:`list_report_decoders`) with ``*_args`` overrides, over ``vocab`` (a :class:`Vocabulary` or report texts
    to build one from); ``decoding`` sets its default decoding options (``num_beams``, ``max_length``, ...). Call the
    generator with images (B, 1, H, W) in [0, 1] → B strings."""
    vocab = vocab if isinstance(vocab, Vocabulary) else Vocabulary.build(vocab)
    model = build_report_model(encoder, decoder, vocab, encoder_args, decoder_args, projection_dropout)
    return EncoderDecoderGenerator(model, vocab, decoding)
