"""Stage 1: a BART report autoencoder whose bottleneck is one pooled embedding.

``text → BART encoder (B, T, d) → pool over non-pad tokens (B, d) → one memory token
(B, 1, d) → BART decoder cross-attention → text``. The pooled vector is the "text
embedding" the stage-2 prior learns to predict from an image; decoding it with the same
decoder turns a predicted embedding into a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.language.tokenizer import load_tokenizer, train_bpe_tokenizer
from cxr_irgen.vision.loading import load_pretrained

POOLINGS = ("mean", "bos", "eos")
IGNORE_INDEX = -100
AUTOENCODER_FILE = "autoencoder.json"


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, d) encoder states → (B, d): mean over non-pad tokens, the ``<s>`` state, or the ``</s>`` state.

    Assumes right padding, so ``</s>`` is the last non-pad position of each row.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    if pooling == "bos":
        return hidden[:, 0]
    if pooling == "eos":
        last = attention_mask.sum(1).long() - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise UserError(f"model.pooling={pooling!r}: use one of {', '.join(POOLINGS)}")


def drop_words(decoder_input_ids: torch.Tensor, rate: float, mask_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Replace a random ``rate`` of the decoder's input tokens (B, T) by ``<mask>``; the start token and pads stay.

    Word dropout (Bowman et al., 2016): the decoder can then predict less from the words so far
    and must read the bottleneck embedding.
    """
    drop = torch.rand(decoder_input_ids.shape, device=decoder_input_ids.device) < rate
    drop[:, 0] = False
    drop &= decoder_input_ids != pad_token_id
    return decoder_input_ids.masked_fill(drop, mask_token_id)


def reconstruction_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy (B, T, V) vs (B, T), averaged over positions whose label is not ``IGNORE_INDEX``."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


class ReportAutoencoder(nn.Module):
    """BART with a one-token bottleneck between encoder and decoder.

    Args:
        bart: a ``BartForConditionalGeneration`` (pretrained or from a config).
        tokenizer: its tokenizer (``<s>``/``</s>``/``<pad>`` must exist).
        pooling: ``mean`` (paper's best), ``bos`` or ``eos``.
        max_length: reports are truncated to this many tokens, special tokens included.
        word_dropout: fraction of decoder input tokens masked in training (:func:`drop_words`; 0 = paper).
    """

    def __init__(self, bart, tokenizer, pooling: str = "mean", max_length: int = 128, word_dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"model.pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        self.bart = bart
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.word_dropout = float(word_dropout)

    @property
    def embedding_dim(self) -> int:
        return int(self.bart.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts → ``input_ids`` / ``attention_mask`` (B, T), right-padded, ``<s> ... </s>``, truncated to max_length."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def embed(self, texts_or_ids: Sequence[str] | torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Texts (or ``input_ids`` (B, T) with their mask) → pooled report embeddings (B, d)."""
        if isinstance(texts_or_ids, torch.Tensor):
            input_ids = texts_or_ids
            if attention_mask is None:
                attention_mask = (input_ids != self.bart.config.pad_token_id).long()
        else:
            enc = self.tokenize(texts_or_ids)
            input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden = self.bart.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool_hidden_states(hidden, attention_mask, self.pooling)

    def logits(self, embeddings: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Decoder logits (B, T, V) given embeddings (B, d) as the single cross-attention memory token."""
        memory = embeddings.unsqueeze(1)
        decoder = self.bart.get_decoder()
        hidden = decoder(input_ids=decoder_input_ids, encoder_hidden_states=memory, encoder_attention_mask=None).last_hidden_state
        return self.bart.lm_head(hidden) + self.bart.final_logits_bias.to(hidden.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss (scalar) of a tokenized batch; pad positions never count."""
        from transformers.models.bart.modeling_bart import shift_tokens_right

        config = self.bart.config
        embeddings = self.embed(input_ids, attention_mask)
        decoder_input_ids = shift_tokens_right(input_ids, config.pad_token_id, config.decoder_start_token_id)
        if self.training and self.word_dropout > 0:
            decoder_input_ids = drop_words(decoder_input_ids, self.word_dropout, self.tokenizer.mask_token_id, config.pad_token_id)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return reconstruction_loss(self.logits(embeddings, decoder_input_ids), labels)

    def decoding_settings(self, max_length: int = 128, num_beams: int = 1, do_sample: bool = False, top_p: float = 0.9, no_repeat_ngram_size: int = 0) -> dict:
        """Every decoding field :meth:`decode` sets, explicitly (recorded in runs and sidecars).

        Nothing is left to the checkpoint's own ``generation_config``: bart-base's carries
        ``no_repeat_ngram_size=3``, ``num_beams=4``, ``length_penalty=2``, ``early_stopping`` and
        ``forced_bos_token_id``, which transformers would otherwise fill into every unset field.
        Greedy and beam search ignore ``top_p``/``top_k``/``temperature`` (set to transformers' defaults
        then); nucleus sampling uses ``top_p`` alone (``top_k=0``). ``no_repeat_ngram_size`` n > 0 forbids any
        token n-gram twice in one report (0: off, the paper's setting).
        """
        config = self.bart.config
        return {
            "max_new_tokens": int(max_length), "min_new_tokens": 0, "num_beams": int(num_beams), "do_sample": bool(do_sample),
            "top_p": float(top_p) if do_sample else 1.0, "top_k": 0 if do_sample else 50, "temperature": 1.0, "no_repeat_ngram_size": int(no_repeat_ngram_size),
            "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1,
            "forced_bos_token_id": None, "forced_eos_token_id": None, "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
            "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
            "decoder_start_token_id": config.decoder_start_token_id,
        }

    @torch.no_grad()
    def decode(
        self,
        embeddings: torch.Tensor,
        max_length: int = 128,
        num_beams: int = 1,
        do_sample: bool = False,
        top_p: float = 0.9,
        batch_size: int = 64,
        no_repeat_ngram_size: int = 0,
    ) -> list[str]:
        """Embeddings (B, d) → B reports; batched, each stops at ``</s>`` or after ``max_length`` new tokens.

        Decodes with exactly :meth:`decoding_settings`: the model's ``generation_config`` is replaced
        by them first, so no checkpoint default can fill a field left unset.
        """
        from transformers import GenerationConfig
        from transformers.modeling_outputs import BaseModelOutput

        generation = GenerationConfig(**self.decoding_settings(max_length, num_beams, do_sample, top_p, no_repeat_ngram_size))
        self.bart.generation_config = generation
        reports: list[str] = []
        for chunk in embeddings.split(int(batch_size)):
            memory = chunk.to(self.device, self.bart.dtype).unsqueeze(1)
            ids = self.bart.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=memory),
                attention_mask=torch.ones(memory.shape[:2], dtype=torch.long, device=self.device),
                generation_config=generation,
            )
            reports += [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return reports

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, the tokenizer and ``autoencoder.json`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.bart.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / AUTOENCODER_FILE).write_text(json.dumps({"pooling": self.pooling, "max_length": self.max_length, "word_dropout": self.word_dropout}, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ReportAutoencoder":
        """Load what :meth:`save_pretrained` wrote (a stage-1 run's ``autoencoder/`` folder or that run dir)."""
        from transformers import BartForConditionalGeneration

        directory = Path(directory)
        if not (directory / AUTOENCODER_FILE).exists() and (directory / "autoencoder" / AUTOENCODER_FILE).exists():
            directory = directory / "autoencoder"
        if not (directory / AUTOENCODER_FILE).exists():
            raise UserError(f"{directory} holds no report autoencoder ({AUTOENCODER_FILE} missing): pass the run dir of `cxr-irgen train-language stage=autoencoder`")
        settings = json.loads((directory / AUTOENCODER_FILE).read_text())
        bart = BartForConditionalGeneration.from_pretrained(directory)
        return cls(bart, load_tokenizer(directory), **settings)


def build_autoencoder(model_cfg, train_texts: Sequence[str]) -> ReportAutoencoder:
    """A stage-1 autoencoder from ``configs/language/model/*.yaml``.

    ``pretrained`` (hub id or dir) loads BART and its tokenizer; otherwise BART is built from
    ``config`` (``BartConfig`` keys) with random weights and, unless ``tokenizer`` names one,
    a byte-level BPE of ``vocab_size`` tokens is trained on ``train_texts``.
    """
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer_source = model_cfg.get("tokenizer") or model_cfg.get("pretrained")
    if tokenizer_source:
        tokenizer = load_tokenizer(tokenizer_source)
    else:
        tokenizer = train_bpe_tokenizer(train_texts, vocab_size=int(model_cfg.vocab_size))
    if model_cfg.get("pretrained"):
        bart = load_pretrained(BartForConditionalGeneration, str(model_cfg.pretrained), None, "config.json, model.safetensors")
        if bart.config.vocab_size < len(tokenizer):
            raise UserError(f"tokenizer has {len(tokenizer)} tokens but BART {model_cfg.pretrained} only {bart.config.vocab_size}: use its own tokenizer")
    else:
        config = BartConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            forced_eos_token_id=None,
            max_position_embeddings=max(int(model_cfg.max_length) + 2, 64),
            **dict(model_cfg.config),
        )
        bart = BartForConditionalGeneration(config)
    return ReportAutoencoder(
        bart, tokenizer, pooling=str(model_cfg.pooling), max_length=int(model_cfg.max_length), word_dropout=float(model_cfg.get("word_dropout", 0.0))
    )
