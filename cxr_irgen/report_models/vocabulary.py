"""Word-level report vocabulary shared by every trained report generator.

Reports are lower-cased and split into words and punctuation (``\\w+`` runs and single
non-space symbols, as nltk's ``wordpunct_tokenize`` for these texts). The vocabulary holds
the words seen at least ``min_count`` times in the training reports (optionally only the
``max_size`` most frequent), after four specials in ifcc's order: ``<pad>`` 0, ``<bos>`` 1,
``<unk>`` 2, ``<eos>`` 3. A report is cut to ``max_words`` words.

    vocab = Vocabulary.build(train_reports, min_count=3, max_words=128)
    ids = vocab.encode(["No effusion.", "Heart size normal."])   # (2, T) with <bos> ... <eos> <pad>
    vocab.decode(ids[0].tolist())                                  # "no effusion ."
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from cxr_irgen.errors import UserError

PAD, BOS, UNK, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<unk>", "<eos>")
VOCABULARY_FILE = "vocabulary.json"
_WORD = re.compile(r"\w+|[^\w\s]")
SENTENCE_END = "."


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of ``text``."""
    return _WORD.findall(str(text).lower())


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces (punctuation stays a separate token, as in the references' tokenisation)."""
    return " ".join(tokens)


class Vocabulary:
    """Word ↔ id mapping with the four specials first; ``max_words`` cuts encoded reports."""

    def __init__(self, tokens: Sequence[str], max_words: int = 128, min_count: int = 1):
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise UserError(f"a vocabulary must start with {SPECIALS}; got {tuple(tokens[:4])}")
        if int(max_words) < 1:
            raise UserError(f"max_words={max_words}: must be at least 1")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.max_words, self.min_count = int(max_words), int(min_count)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_words: int = 128, max_size: int | None = None) -> "Vocabulary":
        """Words occurring at least ``min_count`` times in ``texts``; most frequent first, ties alphabetical."""
        counts = Counter(w for text in texts for w in words(text))
        kept = sorted((w for w, c in counts.items() if c >= int(min_count)), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, int(max_size) - len(SPECIALS))]
        if not kept:
            raise UserError(f"no word occurs {min_count} times in the {sum(counts.values())} training words: lower the vocabulary min_count")
        return cls([*SPECIALS, *kept], max_words=max_words, min_count=min_count)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, text: str) -> list[int]:
        """Word ids of one report, cut to ``max_words`` (no specials)."""
        return [self.index.get(w, UNK) for w in words(text)[: self.max_words]]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, T) long: ``<bos>`` ids ``<eos>``, right-padded with ``<pad>``; T = longest + 2."""
        rows = [[BOS, *self.ids(t), EOS] for t in texts]
        out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids, stopping at ``<eos>``; ``<bos>``/``<pad>`` skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.tokens[i])
        return detokenize(out)

    @property
    def sentence_end(self) -> int:
        """Id of the full stop (sentence boundary), ``<unk>`` if the vocabulary lacks it."""
        return self.index.get(SENTENCE_END, UNK)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCABULARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"max_words": self.max_words, "min_count": self.min_count, "tokens": self.tokens}, indent=0))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Vocabulary":
        path = Path(directory) / VOCABULARY_FILE
        if not path.is_file():
            raise UserError(f"no {VOCABULARY_FILE} in {directory}: not a report-model directory")
        data = json.loads(path.read_text())
        return cls(data["tokens"], max_words=data["max_words"], min_count=data["min_count"])
