"""CXR-RePaiR retrieval (Endo et al., 2021): reports assembled from the nearest training impressions.

    index = CorpusIndex.build(impressions, embed_texts, level="sentence")   # embedded once, L2-normalised
    index.save("runs/repair/index"); index = CorpusIndex.load("runs/repair/index")   # memory-mapped
    scores, ids = index.topk(image_embeddings, k=6)                          # (Q, 6), (Q, 6)
    reports = index.reports(ids)                                             # top-k texts joined

The corpus is the set of distinct (case-insensitive) impressions, whole or split into
sentences. Retrieval is one matrix product per (corpus block, query chunk) with a running
top-k merge, so 10k queries against a 200k-sentence corpus are a few GEMMs, never a Python
loop over queries, and the memory-mapped corpus is read once.

*Select*: keep the k = 1 report when the labeler calls it No Finding, else the k = 6 report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cxr_irgen.data.labels import LABEL_INDEX
from cxr_irgen.errors import UserError

LEVELS = ("report", "sentence")
EMBEDDINGS_FILE, TEXTS_FILE, META_FILE = "embeddings.npy", "texts.json", "index.json"
NO_FINDING = LABEL_INDEX["No Finding"]
SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b\d\.)\s+|\n+")  # not after a list number "1."


def split_sentences(text: str) -> list[str]:
    """Sentences of one impression ("1. No effusion. 2. ..." keeps its numbering inside the sentence)."""
    return [s.strip() for s in SENTENCE_END.split(text) if s and len(s.strip()) > 1]


def corpus_texts(impressions: Sequence[str], level: str) -> list[str]:
    """Distinct corpus entries in first-seen order; duplicates are dropped case-insensitively, as in RePaiR."""
    if level not in LEVELS:
        raise UserError(f"retrieval level={level!r}: use one of {LEVELS}")
    seen, texts = set(), []
    for impression in impressions:
        for text in split_sentences(impression) if level == "sentence" else [impression.strip()]:
            key = text.lower()
            if text and key not in seen:
                seen.add(key)
                texts.append(text)
    return texts


def l2_normalise(x: np.ndarray | torch.Tensor):
    """Rows scaled to unit length (zero rows stay zero)."""
    if torch.is_tensor(x):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def topk_dot(queries: torch.Tensor, corpus: np.ndarray | torch.Tensor, k: int, corpus_block: int = 32768,
             query_chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of ``corpus`` (N, D) by dot product with each of ``queries`` (Q, D): scores and ids (Q, k), best first.

    The corpus (array or memory map) is read in blocks, once; each block is scored against
    the queries in chunks by matrix products, and a running top-k is merged per block.
    """
    n = corpus.shape[0]
    k = min(k, n)
    best_scores = torch.full((queries.shape[0], k), -torch.inf, dtype=queries.dtype)
    best_ids = torch.zeros((queries.shape[0], k), dtype=torch.long)
    for start in range(0, n, corpus_block):
        block = corpus[start:start + corpus_block]
        block = block.to(queries.dtype) if torch.is_tensor(block) else torch.from_numpy(np.array(block, dtype=np.float32))  # reads the mapped block
        for q in range(0, queries.shape[0], query_chunk):
            scores, ids = (queries[q:q + query_chunk] @ block.T).topk(min(k, block.shape[0]), dim=1)
            merged_scores = torch.cat([best_scores[q:q + query_chunk], scores], dim=1)
            merged_ids = torch.cat([best_ids[q:q + query_chunk], ids + start], dim=1)
            top, where = merged_scores.topk(k, dim=1)
            best_scores[q:q + query_chunk], best_ids[q:q + query_chunk] = top, merged_ids.gather(1, where)
    return best_scores, best_ids


class CorpusIndex:
    """L2-normalised corpus embeddings (N, D) and their texts; saved as .npy and loaded memory-mapped."""

    def __init__(self, texts: Sequence[str], embeddings: np.ndarray, level: str, encoder: str = ""):
        if len(texts) != len(embeddings):
            raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
        self.texts, self.embeddings, self.level, self.encoder = list(texts), embeddings, level, encoder

    @classmethod
    def build(cls, impressions: Sequence[str], embed_texts: Callable[[list[str]], np.ndarray | torch.Tensor],
              level: str = "sentence", batch_size: int = 256, encoder: str = "") -> "CorpusIndex":
        """Embed the distinct corpus entries once, in batches, with ``embed_texts(texts) -> (B, D)``."""
        texts = corpus_texts(impressions, level)
        if not texts:
            raise UserError("the retrieval corpus is empty: no impression text in the training split")
        parts = []
        for start in range(0, len(texts), batch_size):
            part = embed_texts(texts[start:start + batch_size])
            parts.append(part.detach().float().cpu().numpy() if torch.is_tensor(part) else np.asarray(part, dtype=np.float32))
        return cls(texts, l2_normalise(np.concatenate(parts)).astype(np.float32), level, encoder)

    def save(self, directory: str | Path) -> Path:
        """Write ``embeddings.npy``, ``texts.json`` and ``index.json`` (each atomically) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"level": self.level, "encoder": self.encoder, "n": len(self.texts), "dim": int(self.embeddings.shape[1])}
        for name, write in ((EMBEDDINGS_FILE, lambda f: np.save(f, np.asarray(self.embeddings, dtype=np.float32))),
                            (TEXTS_FILE, lambda f: f.write(json.dumps(self.texts).encode())),
                            (META_FILE, lambda f: f.write(json.dumps(meta, indent=2).encode()))):
            tmp = directory / f".{name}.tmp"
            with open(tmp, "wb") as f:
                write(f)
            tmp.replace(directory / name)
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> "CorpusIndex":
        directory = Path(directory)
        missing = [n for n in (EMBEDDINGS_FILE, TEXTS_FILE, META_FILE) if not (directory / n).exists()]
        if missing:
            raise UserError(f"{directory} is not a retrieval index (missing {', '.join(missing)}): build it with CorpusIndex.build(...).save()")
        meta = json.loads((directory / META_FILE).read_text())
        embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        texts = json.loads((directory / TEXTS_FILE).read_text())
        if embeddings.shape != (meta["n"], meta["dim"]) or len(texts) != meta["n"]:
            raise UserError(f"{directory}: index.json says {meta['n']}×{meta['dim']} but the files hold {embeddings.shape} and {len(texts)} texts; rebuild it")
        return cls(texts, embeddings, meta["level"], meta["encoder"])

    def topk(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embeddings (Q, D), normalised here → scores and corpus ids (Q, k), best first."""
        queries = torch.as_tensor(np.asarray(queries, dtype=np.float32)) if not torch.is_tensor(queries) else queries.detach().float().cpu()
        if queries.ndim != 2 or queries.shape[1] != self.embeddings.shape[1]:
            raise UserError(f"query embeddings {tuple(queries.shape)} do not match the index's dimension {self.embeddings.shape[1]}")
        return topk_dot(l2_normalise(queries), self.embeddings, k)

    def reports(self, ids: torch.Tensor, k: int | None = None) -> list[str]:
        """Join the first ``k`` (default all) retrieved texts of each row of ids (Q, K) into one report."""
        rows = ids[:, :k] if k else ids
        return [" ".join(self.texts[i] for i in row) for row in rows.tolist()]


def select_reports(top1: Sequence[str], top6: Sequence[str], label_fn: Callable[[list[str]], np.ndarray] | None = None) -> list[str]:
    """RePaiR's Select: the k = 1 report where ``label_fn`` (default: the in-house labeler) says No Finding
    (1.0) on it, else the k = 6 report. ``label_fn(texts) -> (N, 14)`` in CheXpert order."""
    if len(top1) != len(top6):
        raise ValueError(f"lengths differ: {len(top1)} top-1 and {len(top6)} top-6 reports")
    if label_fn is None:
        from cxr_irgen.text.labeler import label_reports as label_fn
    no_finding = np.asarray(label_fn(list(top1)))[:, NO_FINDING] == 1.0
    return [one if normal else six for one, six, normal in zip(top1, top6, no_finding)]
