"""The one beam search of every trained report generator (greedy is ``beam_size=1``).

The model supplies ``step(tokens, state) -> (log_probs, state)``: ``tokens`` (N, t) are the
prefixes so far (``<bos>`` first), ``log_probs`` (N, V) the next-word log-probabilities and
``state`` any tensors (or tuples/dicts of tensors) with N first, e.g. the visual memory
(N, M, d) or LSTM states. N = batch × beam; the search repeats and reorders ``state``
along dim 0 as beams are kept.

Options: ``length_penalty`` α ranks hypotheses by ``sum log p / length**α`` (0: raw sum,
the default); ``block_trigrams`` forbids a word that would repeat a trigram already in the
hypothesis (opt-in). ``<pad>`` and ``<bos>`` are never generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.vocabulary import BOS, EOS, PAD

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass(frozen=True)
class BeamSettings:
    """Decoding options; ``max_length`` counts generated words including ``<eos>``."""

    beam_size: int = 4
    max_length: int = 128
    length_penalty: float = 0.0
    block_trigrams: bool = False

    def __post_init__(self):
        if int(self.beam_size) < 1 or int(self.max_length) < 1:
            raise UserError(f"beam_size={self.beam_size}, max_length={self.max_length}: both must be at least 1")


def map_state(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a (nested tuple/list/dict) state; other values unchanged."""
    if torch.is_tensor(state):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(v, fn) for v in state)
    return state


def _block_repeated_trigrams(tokens: torch.Tensor, log_probs: torch.Tensor, alive: torch.Tensor) -> None:
    """In place: -inf for each word that would close a trigram already present in its row's prefix."""
    for row in alive.nonzero().flatten().tolist():
        seq = tokens[row, 1:].tolist()
        if len(seq) < 3:
            continue
        last = (seq[-2], seq[-1])
        banned = {seq[i + 2] for i in range(len(seq) - 2) if (seq[i], seq[i + 1]) == last}
        if banned:
            log_probs[row, list(banned)] = float("-inf")


@torch.no_grad()
def beam_search(step: StepFn, state: Any, batch_size: int, settings: BeamSettings, device: torch.device | str) -> list[list[int]]:
    """Best word ids per sample (without ``<bos>``/``<eos>``), ``batch_size`` lists."""
    k, b = int(settings.beam_size), int(batch_size)
    alpha = float(settings.length_penalty)
    state = map_state(state, lambda t: t.repeat_interleave(k, dim=0))
    tokens = torch.full((b * k, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    lengths = torch.zeros(b * k, dtype=torch.long, device=device)
    finished = torch.zeros(b * k, dtype=torch.bool, device=device)
    offsets = torch.arange(b, device=device).unsqueeze(1) * k
    for _ in range(int(settings.max_length)):
        log_probs, state = step(tokens, state)
        log_probs = log_probs.float().clone()
        log_probs[:, PAD] = float("-inf")
        log_probs[:, BOS] = float("-inf")
        if settings.block_trigrams:
            _block_repeated_trigrams(tokens, log_probs, ~finished)
        log_probs[finished] = float("-inf")
        log_probs[finished, PAD] = 0.0  # a finished hypothesis only carries on with free padding
        vocab = log_probs.shape[-1]
        new_lengths = lengths + (~finished).long()
        candidates = scores.reshape(-1, 1) + log_probs
        ranked = candidates / new_lengths.clamp(min=1).float().pow(alpha).unsqueeze(1) if alpha else candidates
        top = ranked.reshape(b, k * vocab).topk(k, dim=1).indices
        source = (offsets + top // vocab).reshape(-1)
        words = (top % vocab).reshape(-1, 1)
        scores = candidates.reshape(b, k * vocab).gather(1, top)
        tokens = torch.cat([tokens[source], words], dim=1)
        lengths = new_lengths[source]
        finished = finished[source] | (words.squeeze(1) == EOS)
        state = map_state(state, lambda t: t.index_select(0, source))
        if bool(finished.all()):
            break
    final = scores.reshape(-1) / lengths.clamp(min=1).float().pow(alpha) if alpha else scores.reshape(-1)
    best = (offsets.squeeze(1) + final.reshape(b, k).argmax(dim=1)).tolist()
    out = []
    for row in best:
        ids = tokens[row, 1:].tolist()
        out.append([i for i in ids[: ids.index(EOS)] if i != PAD] if EOS in ids else [i for i in ids if i != PAD])
    return out
