"""Report-generation metrics, pycocoevalcap-compatible: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR.

Every generated report is scored against its reference report(s), never truncated.
Text is tokenised like pycocoevalcap's PTBTokenizer output (lower case, punctuation
dropped, hyphenated words and decimals kept whole) by :func:`tokenize`, then:

- ``bleu1`` … ``bleu4``: corpus-level BLEU with the "closest" reference length for the
  brevity penalty, exactly as pycocoevalcap's ``BleuScorer.compute_score(option="closest")``
  (same smoothing constants 1e-15 / 1e-9).
- ``rougeL_coco``: pycocoevalcap's ROUGE-L (LCS precision/recall maxed over references,
  F with β = 1.2, mean over reports).
- ``rougeL_f_stem``: Google's ``rouge_score`` ROUGE-L F-measure with Porter stemming (its
  own tokeniser), best reference per report, mean over reports.
- ``cider_d``: pycocoevalcap's CIDEr (which is CIDEr-D: clipped tf-idf n-gram vectors,
  Gaussian length penalty σ = 6, ×10), document frequencies from the evaluated references.
- ``meteor``: pycocoevalcap's METEOR 1.5 jar, only when ``java`` is on PATH.

Empty input and generated/reference lists of different lengths raise ``ValueError`` (every
function, never a silent truncation by ``zip``); so does a report with an empty reference list.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from typing import Sequence

import numpy as np

TOKENIZER_NAME = "ptb-like (lower case, punctuation removed)"
_TOKEN = re.compile(r"[a-z0-9]+(?:[-./'][a-z0-9]+)*")
MAX_N = 4


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without punctuation: 'Mild cardiomegaly, 2.5 cm.' → ['mild', 'cardiomegaly', '2.5', 'cm']."""
    return _TOKEN.findall(str(text).lower())


def _ngrams(tokens: Sequence[str], max_n: int = MAX_N) -> Counter:
    return Counter(tuple(tokens[i:i + k]) for k in range(1, max_n + 1) for i in range(len(tokens) - k + 1))


def _as_reference_lists(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def check_pairs(hypotheses: Sequence, references: Sequence, metric: str) -> None:
    """``ValueError`` unless there is at least one report and exactly one reference entry per report, none empty."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{metric}: {len(hypotheses)} generated reports but {len(references)} references")
    if not len(hypotheses):
        raise ValueError(f"{metric}: no reports to score")
    empty = [i for i, refs in enumerate(references) if not isinstance(refs, str) and not len(refs)]
    if empty:
        raise ValueError(f"{metric}: report {empty[0]} has an empty list of references")


def bleu(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], max_n: int = MAX_N) -> list[float]:
    """Corpus BLEU-1..max_n of tokenised hypotheses vs lists of tokenised references ("closest" brevity penalty)."""
    check_pairs(hypotheses, references, "bleu")
    tiny, small = 1e-15, 1e-9
    correct, guess = np.zeros(max_n), np.zeros(max_n)
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        max_ref_counts: Counter = Counter()
        for ref in refs:
            max_ref_counts |= _ngrams(ref, max_n)
        for gram, count in _ngrams(hyp, max_n).items():
            correct[len(gram) - 1] += min(count, max_ref_counts[gram])
        guess += [max(0, len(hyp) - k) for k in range(max_n)]
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    precisions = np.cumprod((correct + tiny) / (guess + small))
    scores = [float(p ** (1.0 / (k + 1))) for k, p in enumerate(precisions)]
    ratio = (hyp_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [s * penalty for s in scores]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Allison-Dix / Hyyrö)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l_coco(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], beta: float = 1.2) -> float:
    """pycocoevalcap ROUGE-L: per report F_β of the best LCS precision and recall over references; mean over reports."""
    check_pairs(hypotheses, references, "rouge_l_coco")
    scores = []
    for hyp, refs in zip(hypotheses, references):
        lcs = [lcs_length(ref, hyp) for ref in refs]
        precision = max(common / len(hyp) if hyp else 0.0 for common in lcs)
        recall = max(common / len(r) if r else 0.0 for common, r in zip(lcs, refs))
        scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0)
    return float(np.mean(scores))


def rouge_l_stemmed(hypotheses: Sequence[str], references: Sequence[list[str]]) -> float:
    """rouge_score ROUGE-L F-measure with Porter stemming, best reference per report, mean over reports."""
    from rouge_score import rouge_scorer

    check_pairs(hypotheses, references, "rouge_l_stemmed")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs) for hyp, refs in zip(hypotheses, references)]
    return float(np.mean(scores))


def cider_d(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], sigma: float = 6.0) -> float:
    """pycocoevalcap CIDEr(-D): mean over reports of 10 × mean_n mean_refs clipped tf-idf cosine × length penalty."""
    check_pairs(hypotheses, references, "cider_d")
    ref_counts = [[_ngrams(r) for r in refs] for refs in references]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(set().union(*counts))
    log_docs = math.log(float(len(references)))

    def vectorise(counts: Counter):
        vec = [dict() for _ in range(MAX_N)]
        norm = np.zeros(MAX_N)
        for gram, tf in counts.items():
            weight = tf * (log_docs - math.log(max(1.0, document_frequency[gram])))
            vec[len(gram) - 1][gram] = weight
            norm[len(gram) - 1] += weight**2
        return vec, np.sqrt(norm), sum(tf for g, tf in counts.items() if len(g) == 2)

    scores = []
    for hyp, refs in zip(hypotheses, ref_counts):
        vec_h, norm_h, len_h = vectorise(_ngrams(hyp))
        total = np.zeros(MAX_N)
        for ref in refs:
            vec_r, norm_r, len_r = vectorise(ref)
            for n in range(MAX_N):
                value = sum(min(w, vec_r[n].get(g, 0.0)) * vec_r[n].get(g, 0.0) for g, w in vec_h[n].items())
                if norm_h[n] and norm_r[n]:
                    value /= norm_h[n] * norm_r[n]
                total[n] += value * math.exp(-((len_h - len_r) ** 2) / (2 * sigma**2))
        scores.append(10.0 * total.mean() / len(refs))
    return float(np.mean(scores))


def meteor(hypotheses: Sequence[str], references: Sequence[list[str]]) -> float | None:
    """pycocoevalcap METEOR 1.5 (Java) on tokenised text; None when ``java`` is not on PATH."""
    if shutil.which("java") is None:
        return None
    check_pairs(hypotheses, references, "meteor")
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    scorer = Meteor()
    score, _ = scorer.compute_score(gts, res)
    del scorer  # its __del__ stops the Java process
    return float(score)


def text_metrics(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], with_meteor: bool = True) -> dict:
    """All metrics for N generated reports and their references (a string or a list of strings each)."""
    check_pairs(hypotheses, references, "text_metrics")
    ref_lists = _as_reference_lists(references)
    hyp_tokens = [tokenize(h) for h in hypotheses]
    ref_tokens = [[tokenize(r) for r in refs] for refs in ref_lists]
    scores = bleu(hyp_tokens, ref_tokens)
    out = {f"bleu{k + 1}": s for k, s in enumerate(scores)}
    out["rougeL_coco"] = rouge_l_coco(hyp_tokens, ref_tokens)
    out["rougeL_f_stem"] = rouge_l_stemmed(list(hypotheses), ref_lists)
    out["cider_d"] = cider_d(hyp_tokens, ref_tokens)
    out["meteor"] = meteor(list(hypotheses), ref_lists) if with_meteor else None
    out["n_reports"] = len(hypotheses)
    out["tokenizer"] = TOKENIZER_NAME
    return out
