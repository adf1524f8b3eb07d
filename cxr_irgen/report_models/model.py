"""Any encoder × any decoder: images → visual tokens → shared projection → decoder → report.

    model = build_report_model("dve", "transformer", vocab)            # names of files in configs/report_models/
    loss = model({"pixel_values": images, "targets": vocab.encode(texts)})
    generator = EncoderDecoderGenerator(model, vocab)                   # the ReportGenerator (kind "encoder-decoder")
    generator(images, num_beams=4)

A frozen encoder's tokens can be computed once and passed as ``visual_tokens`` instead of
``pixel_values`` (see :mod:`cxr_irgen.report_models.train`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.beam_search import BeamSettings
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.decoders import build_decoder
from cxr_irgen.report_models.encoders import VisualEncoder, build_encoder_from_config
from cxr_irgen.report_models.interface import GENERATOR_FILE, ReportGenerator, register_report_generator
from cxr_irgen.report_models.projection import VisualProjection
from cxr_irgen.report_models.vocabulary import Vocabulary
from cxr_irgen.report_models.weights import load_strict, read_weights

WEIGHTS_FILE = "model.safetensors"


def study_tokens(encoder: nn.Module, pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Visual tokens (B, N, C) of one image per item (B, 1, H, W), or of up to K images per study (B, K, 1, H, W) with
    ``mask`` (B, K) marking the real ones: each study's tokens are the element-wise max over its images (ifcc's max-merge)."""
    if pixels.dim() == 4:
        return encoder(pixels)
    if mask is None:
        mask = torch.ones(pixels.shape[:2], dtype=torch.bool, device=pixels.device)
    if not mask.any(dim=1).all():
        raise ValueError("every study needs at least one image (image_mask has an all-False row)")
    present = encoder(pixels[mask])  # only the real images: (M, N, C)
    tokens = present.new_full((*mask.shape, *present.shape[1:]), float("-inf"))
    tokens[mask] = present
    return tokens.amax(dim=1)


class ReportModel(nn.Module):
    """encoder (B, 1, H, W) → (B, N, C) (a study's K images: max-merged); projection → (B, N, d_model); decoder → loss or word ids."""

    def __init__(self, encoder: VisualEncoder, decoder: nn.Module, encoder_cfg: DictConfig, decoder_cfg: DictConfig, projection_dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.projection = VisualProjection(encoder.width, decoder.d_model, projection_dropout)
        self.decoder = decoder
        self.encoder_cfg, self.decoder_cfg = encoder_cfg, decoder_cfg
        self.projection_dropout = float(projection_dropout)

    def memory(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, N, d_model) from cached ``visual_tokens`` (B, N, C) or from ``pixel_values`` (B, 1, H, W) or a study's
        (B, K, 1, H, W) with ``image_mask`` (B, K) (see :func:`study_tokens`)."""
        if "visual_tokens" in batch:
            tokens = batch["visual_tokens"]
        else:
            tokens = study_tokens(self.encoder, batch["pixel_values"], batch.get("image_mask"))
        return self.projection(tokens.float())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainer's ``group_lr`` names: ``visual`` (the image encoder) and ``language`` (projection and decoder)."""
        return {"visual": list(self.encoder.parameters()), "language": [*self.projection.parameters(), *self.decoder.parameters()]}

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Training loss of a batch with ``targets`` (B, T) and visual tokens or pixels."""
        return self.decoder.loss(self.memory(batch), batch["targets"])

    @torch.no_grad()
    def generate(self, images: torch.Tensor, settings: BeamSettings) -> list[list[int]]:
        return self.decoder.generate(self.memory({"pixel_values": images}), settings)


def build_report_model(encoder: str | DictConfig, decoder: str | DictConfig, vocab: Vocabulary,
                       encoder_overrides: dict | None = None, decoder_overrides: dict | None = None, projection_dropout: float = 0.1) -> ReportModel:
    """Encoder and decoder by config name (or config) for ``vocab``; the encoder's width sizes the projection."""
    encoder_cfg = report_model_config("encoder", encoder, encoder_overrides) if isinstance(encoder, str) else encoder
    decoder_cfg = report_model_config("decoder", decoder, decoder_overrides) if isinstance(decoder, str) else decoder
    visual = build_encoder_from_config(encoder_cfg)
    text = build_decoder(decoder_cfg, len(vocab), vocab.max_words + 2, vocab.sentence_end)
    return ReportModel(visual, text, encoder_cfg, decoder_cfg, projection_dropout)


DECODE_DEFAULTS = {"num_beams": 4, "max_length": 128, "length_penalty": 0.0, "block_trigrams": False}


@register_report_generator("encoder-decoder")
class EncoderDecoderGenerator(ReportGenerator):
    """A trained :class:`ReportModel` and its vocabulary behind the shared interface (beam search decoding)."""

    def __init__(self, model: ReportModel, vocab: Vocabulary, decoding: dict | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.decoding = {**DECODE_DEFAULTS, **(decoding or {})}
        self.image_size = model.encoder.image_size

    def to(self, device: torch.device | str) -> "EncoderDecoderGenerator":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def settings(self, **decode: Any) -> BeamSettings:
        """Beam settings from the saved defaults and ``decode`` (None values keep the default)."""
        if decode.pop("do_sample", False):
            raise UserError("encoder-decoder report models decode by beam search: set do_sample=false (language.do_sample)")
        decode.pop("top_p", None)
        unknown = set(decode) - set(DECODE_DEFAULTS)
        if unknown:
            raise UserError(f"unknown decoding option(s) {sorted(unknown)}; use {', '.join(DECODE_DEFAULTS)}")
        options = {**self.decoding, **{k: v for k, v in decode.items() if v is not None}}
        return BeamSettings(int(options["num_beams"]), int(options["max_length"]), float(options["length_penalty"]), bool(options["block_trigrams"]))

    def decoding_settings(self, **decode: Any) -> dict:
        return {"strategy": "beam search", **dataclasses.asdict(self.settings(**decode))}

    def generate(self, images: torch.Tensor, **decode: Any) -> list[str]:
        return [self.vocab.decode(ids) for ids in self.model.generate(images, self.settings(**decode))]

    def save_pretrained(self, directory: str | Path) -> Path:
        """``model.safetensors``, ``vocabulary.json`` and ``report_generator.json`` (encoder/decoder configs, decoding defaults)."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(directory / WEIGHTS_FILE))
        self.vocab.save(directory)
        # the weights file holds the whole encoder: building it again must not load other files
        encoder_cfg = OmegaConf.merge(self.model.encoder_cfg, {k: None for k in ("checkpoint", "pretrained") if k in self.model.encoder_cfg})
        self.write_kind(
            directory,
            encoder=OmegaConf.to_container(encoder_cfg, resolve=True),
            decoder=OmegaConf.to_container(self.model.decoder_cfg, resolve=True),
            projection_dropout=self.model.projection_dropout,
            decoding=self.decoding,
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "EncoderDecoderGenerator":
        import json

        directory = Path(directory)
        record = json.loads((directory / GENERATOR_FILE).read_text())
        vocab = Vocabulary.load(directory)
        model = build_report_model(OmegaConf.create(record["encoder"]), OmegaConf.create(record["decoder"]), vocab,
                                   projection_dropout=record["projection_dropout"])
        load_strict(model, read_weights(directory / WEIGHTS_FILE), directory / WEIGHTS_FILE)
        return cls(model, vocab, record["decoding"])
