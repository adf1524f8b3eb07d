"""Report decoders of the encoder × decoder study; each reads the projected visual memory (B, N, d_model).

One YAML per decoder under ``configs/report_models/decoder/`` (``builder`` + arguments); ``builder``
names a class registered with ``@register_report_decoder``:

- ``transformer`` :class:`TransformerReportDecoder`: vanilla post-norm Transformer decoder (8 heads, FFN 2048).
- ``m2``          :class:`MeshedMemoryDecoder`: memory-augmented encoder (learned slots) + meshed decoder
  (sigmoid gates over every encoder layer's output), Cornia et al. 2020 as used by ifcc.
- ``cnn_rnn_rnn`` :class:`HierarchicalLstmDecoder`: sentence LSTM (topic + stop) and word LSTM with
  visual-sentinel adaptive attention; loss ``stop_weight·BCE(stop) + CE(words)``.
- ``r2gen``, ``r2gencmn``: :mod:`~cxr_irgen.report_models.r2gen`, :mod:`~cxr_irgen.report_models.r2gencmn`
  (imported here so they register).

Every decoder has ``loss(memory, targets)`` (targets (B, T) from :meth:`Vocabulary.encode`) and
``generate(memory, settings)`` (word ids per sample, through the one beam search).

    decoder = build_report_decoder("transformer-tiny", vocab_size=len(vocab), max_positions=vocab.max_words + 2)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models import r2gen, r2gencmn  # noqa: F401  (they register "r2gen" and "r2gencmn")
from cxr_irgen.report_models.beam_search import BeamSettings, beam_search
from cxr_irgen.report_models.configs import report_model_config
from cxr_irgen.report_models.decoder_base import DECODER_BUILDERS, TokenDecoder, WordEmbedding, causal_mask, next_word_loss, register_report_decoder
from cxr_irgen.report_models.vocabulary import BOS, EOS, PAD
from cxr_irgen.utils.registry import config_names

DECODER_CONFIGS = "report_models/decoder"


@register_report_decoder("transformer")
class TransformerReportDecoder(TokenDecoder):
    """Post-norm Transformer decoder over the visual memory; ``max_positions`` = longest report + 2."""

    def __init__(self, vocab_size: int, max_positions: int, d_model: int = 512, heads: int = 8, ffn: int = 2048, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.d_model = int(d_model)
        self.embed = WordEmbedding(vocab_size, d_model, max_positions, dropout)
        layer = nn.TransformerDecoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=False)
        self.layers = nn.TransformerDecoder(layer, int(layers))
        self.out = nn.Linear(d_model, vocab_size)

    def logits(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(tokens.shape[1], tokens.device)
        hidden = self.layers(self.embed(tokens), memory, tgt_mask=mask, tgt_key_padding_mask=tokens == PAD)
        return self.out(hidden)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MemoryAugmentedLayer(nn.Module):
    """M2 encoder layer: self-attention whose keys/values also hold ``slots`` learned memory vectors; post-norm."""

    def __init__(self, d_model: int, heads: int, ffn: int, slots: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.memory_keys = nn.Parameter(torch.randn(1, slots, d_model) / math.sqrt(d_model))
        self.memory_values = nn.Parameter(torch.randn(1, slots, d_model) / math.sqrt(slots))
        self.feed_forward = FeedForward(d_model, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        keys = torch.cat([x, self.memory_keys.expand(b, -1, -1)], dim=1)
        values = torch.cat([x, self.memory_values.expand(b, -1, -1)], dim=1)
        x = self.norm1(x + self.dropout(self.attention(x, keys, values, need_weights=False)[0]))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class MeshedDecoderLayer(nn.Module):
    """M2 decoder layer: masked self-attention, cross-attention to each encoder level mixed by sigmoid gates, FFN."""

    def __init__(self, d_model: int, heads: int, ffn: int, levels: int, dropout: float):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.gates = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(levels))
        self.feed_forward = FeedForward(d_model, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: torch.Tensor, levels: torch.Tensor, mask: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """y (B, T, d); levels (B, L, N, d)."""
        y = self.norm1(y + self.dropout(self.self_attention(y, y, y, attn_mask=mask, key_padding_mask=padding, need_weights=False)[0]))
        mixed = torch.zeros_like(y)
        for level, gate in enumerate(self.gates):
            memory = levels[:, level]
            attended = self.cross_attention(y, memory, memory, need_weights=False)[0]
            mixed = mixed + torch.sigmoid(gate(torch.cat([y, attended], dim=-1))) * attended
        y = self.norm2(y + self.dropout(mixed / math.sqrt(len(self.gates))))
        return self.norm3(y + self.dropout(self.feed_forward(y)))


@register_report_decoder("m2")
class MeshedMemoryDecoder(TokenDecoder):
    """M2 Transformer: memory-augmented encoder layers over the visual memory, meshed decoder layers over all of them."""

    def __init__(self, vocab_size: int, max_positions: int, d_model: int = 512, heads: int = 8, ffn: int = 2048,
                 encoder_layers: int = 1, decoder_layers: int = 1, memory_slots: int = 40, dropout: float = 0.1):
        super().__init__()
        self.d_model = int(d_model)
        self.encoder = nn.ModuleList(MemoryAugmentedLayer(d_model, heads, ffn, memory_slots, dropout) for _ in range(int(encoder_layers)))
        self.embed = WordEmbedding(vocab_size, d_model, max_positions, dropout)
        self.decoder = nn.ModuleList(MeshedDecoderLayer(d_model, heads, ffn, int(encoder_layers), dropout) for _ in range(int(decoder_layers)))
        self.out = nn.Linear(d_model, vocab_size)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, N, d) → every encoder layer's output (B, L, N, d)."""
        levels = []
        for layer in self.encoder:
            memory = layer(memory)
            levels.append(memory)
        return torch.stack(levels, dim=1)

    def logits(self, tokens: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        mask, padding = causal_mask(tokens.shape[1], tokens.device), tokens == PAD
        y = self.embed(tokens)
        for layer in self.decoder:
            y = layer(y, levels, mask, padding)
        return self.out(y)


class SentinelAttention(nn.Module):
    """Adaptive attention (Lu et al. 2017): attend over the visual memory (B, N, d) and a visual sentinel (B, d)."""

    def __init__(self, d_model: int, attention_dim: int):
        super().__init__()
        self.visual = nn.Linear(d_model, attention_dim)
        self.sentinel = nn.Linear(d_model, attention_dim)
        self.hidden = nn.Linear(d_model, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, memory: torch.Tensor, hidden: torch.Tensor, sentinel: torch.Tensor) -> torch.Tensor:
        query = self.hidden(hidden).unsqueeze(1)
        content = self.score(torch.tanh(self.visual(memory) + query)).squeeze(-1)
        sentinel_score = self.score(torch.tanh(self.sentinel(sentinel).unsqueeze(1) + query)).squeeze(-1)
        weights = torch.softmax(torch.cat([content, sentinel_score], dim=1), dim=1)
        return (weights[:, :-1].unsqueeze(-1) * memory).sum(1) + weights[:, -1:] * sentinel


@register_report_decoder("cnn_rnn_rnn")
class HierarchicalLstmDecoder(nn.Module):
    """CNN-RNN-RNN: a sentence LSTM over the mean visual vector emits a topic and a stop logit per sentence; a word
    LSTM (input: previous word + topic) with sentinel attention writes each sentence. A report ends at the first
    sentence whose stop probability is ≥ 0.5 (or after ``max_sentences``)."""

    def __init__(self, vocab_size: int, max_positions: int, sentence_end: int, d_model: int = 512, attention_dim: int = 512,
                 max_sentences: int = 12, max_sentence_words: int = 40, stop_weight: float = 5.0, dropout: float = 0.1):
        super().__init__()
        self.d_model, self.sentence_end = int(d_model), int(sentence_end)
        self.max_sentences, self.max_sentence_words = int(max_sentences), min(int(max_sentence_words), int(max_positions) - 1)
        self.stop_weight = float(stop_weight)
        self.sentence_lstm = nn.LSTMCell(d_model, d_model)
        self.topic = nn.Linear(d_model, d_model)
        self.stop = nn.Linear(d_model, 1)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.word_lstm = nn.LSTMCell(2 * d_model, d_model)
        self.sentinel_gate = nn.Linear(3 * d_model, d_model)
        self.attention = SentinelAttention(d_model, attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, vocab_size)

    def split_sentences(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """targets (B, T) → words (B, S, L) (``<bos>`` sentence ``<eos>``), stop targets (B, S), sentence mask (B, S)."""
        rows = []
        for row in targets.tolist():
            ids = [i for i in row if i not in (PAD, BOS, EOS)]
            sentences, current = [], []
            for i in ids:
                current.append(i)
                if i == self.sentence_end:
                    sentences.append(current)
                    current = []
            if current:
                sentences.append(current)
            rows.append([s[: self.max_sentence_words - 1] for s in sentences[: self.max_sentences]] or [[]])
        s_max = max(len(r) for r in rows)
        l_max = max(len(s) for r in rows for s in r) + 2
        words = torch.full((len(rows), s_max, l_max), PAD, dtype=torch.long)
        stops = torch.zeros(len(rows), s_max)
        present = torch.zeros(len(rows), s_max, dtype=torch.bool)
        for b, sentences in enumerate(rows):
            for s, sentence in enumerate(sentences):
                words[b, s, : len(sentence) + 2] = torch.tensor([BOS, *sentence, EOS])
                present[b, s] = True
            stops[b, len(sentences) - 1] = 1.0
        device = targets.device
        return words.to(device), stops.to(device), present.to(device)

    def topics(self, memory: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentence LSTM for ``count`` steps: topics (B, S, d) and stop logits (B, S)."""
        mean = memory.mean(dim=1)
        h = c = mean.new_zeros(mean.shape[0], self.d_model)
        topics, stops = [], []
        for _ in range(count):
            h, c = self.sentence_lstm(mean, (h, c))
            topics.append(torch.tanh(self.topic(h)))
            stops.append(self.stop(h).squeeze(-1))
        return torch.stack(topics, dim=1), torch.stack(stops, dim=1)

    def word_step(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Last token (N,) + state (h, c, topic, memory) → next-word logits (N, V), new state."""
        h, c, topic, memory = state
        x = torch.cat([self.embed(tokens), topic], dim=-1)
        gate = torch.sigmoid(self.sentinel_gate(torch.cat([x, h], dim=-1)))
        h, c = self.word_lstm(x, (h, c))
        context = self.attention(memory, h, gate * torch.tanh(c))
        return self.out(self.dropout(context + h)), (h, c, topic, memory)

    def loss(self, memory: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        words, stop_targets, present = self.split_sentences(targets)
        b, s, length = words.shape
        topics, stop_logits = self.topics(memory, s)
        flat_words = words.flatten(0, 1)
        keep = present.flatten()
        flat_words, topic = flat_words[keep], topics.flatten(0, 1)[keep]
        sentence_memory = memory.repeat_interleave(s, dim=0)[keep]
        h = c = topic.new_zeros(topic.shape[0], self.d_model)
        state, logits = (h, c, topic, sentence_memory), []
        for t in range(length - 1):
            step_logits, state = self.word_step(flat_words[:, t], state)
            logits.append(step_logits)
        words_loss = next_word_loss(torch.stack(logits, dim=1), flat_words)
        stop_loss = F.binary_cross_entropy_with_logits(stop_logits[present].float(), stop_targets[present])
        return self.stop_weight * stop_loss + words_loss

    def generate(self, memory: torch.Tensor, settings: BeamSettings) -> list[list[int]]:
        """Sentences one after another until each report's stop probability reaches 0.5; words by beam search."""
        b = memory.shape[0]
        topics, stop_logits = self.topics(memory, self.max_sentences)
        words_settings = BeamSettings(settings.beam_size, min(settings.max_length, self.max_sentence_words), settings.length_penalty, settings.block_trigrams)
        reports: list[list[int]] = [[] for _ in range(b)]
        open_reports = torch.ones(b, dtype=torch.bool, device=memory.device)

        def step(tokens, state):
            logits, state = self.word_step(tokens[:, -1], state)
            return torch.log_softmax(logits.float(), dim=-1), state

        for s in range(self.max_sentences):
            rows = open_reports.nonzero().flatten()
            if not len(rows):
                break
            h = c = memory.new_zeros(len(rows), self.d_model)
            sentences = beam_search(step, (h, c, topics[rows, s], memory[rows]), len(rows), words_settings, memory.device)
            for row, sentence in zip(rows.tolist(), sentences):
                reports[row] += sentence
            open_reports &= torch.sigmoid(stop_logits[:, s]) < 0.5
        return [r[: settings.max_length] for r in reports]


def list_report_decoders() -> list[str]:
    """The decoder names, one per YAML in ``configs/report_models/decoder/`` (``transformer``, ``r2gen-tiny``, ...)."""
    return config_names(DECODER_CONFIGS)


def build_report_decoder(name: str, vocab_size: int, max_positions: int, sentence_end: int | None = None, **overrides) -> nn.Module:
    """Decoder ``name`` (a YAML in ``configs/report_models/decoder/``) with ``overrides``, random init, for a vocabulary
    of ``vocab_size`` words and reports of up to ``max_positions`` tokens; ``sentence_end`` is the id of the
    sentence-ending word (needed by ``cnn_rnn_rnn``)."""
    return build_decoder(report_model_config("decoder", name, overrides), vocab_size, max_positions, sentence_end)


def build_decoder(cfg: DictConfig, vocab_size: int, max_positions: int, sentence_end: int | None = None) -> nn.Module:
    """A decoder from its config (``builder`` + arguments) for a vocabulary of ``vocab_size``."""
    args = OmegaConf.to_container(cfg, resolve=True)
    builder = DECODER_BUILDERS.get(args.pop("builder", None))
    args.pop("name", None)
    if builder is HierarchicalLstmDecoder:
        if sentence_end is None:
            raise UserError(f"decoder {cfg.get('name')}: a hierarchical decoder needs the vocabulary's sentence_end id")
        args["sentence_end"] = sentence_end
    try:
        return builder(vocab_size=vocab_size, max_positions=max_positions, **args)
    except TypeError as err:
        raise UserError(f"decoder {cfg.get('name')}: {err}") from None
