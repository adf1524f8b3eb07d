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


def bleu_statistics(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], max_n: int = MAX_N) -> np.ndarray:
    """(N, 2·max_n + 2) per-report BLEU counts: clipped matches 1..max_n, guesses 1..max_n, hypothesis length, closest reference length.

    Corpus BLEU is a function of their column sums (:func:`bleu_from_statistics`), so a paired test can
    recompute it for any mix of two systems' reports (:mod:`cxr_irgen.eval.significance`)."""
    check_pairs(hypotheses, references, "bleu")
    stats = np.zeros((len(hypotheses), 2 * max_n + 2))
    for row, (hyp, refs) in enumerate(zip(hypotheses, references)):
        max_ref_counts: Counter = Counter()
        for ref in refs:
            max_ref_counts |= _ngrams(ref, max_n)
        for gram, count in _ngrams(hyp, max_n).items():
            stats[row, len(gram) - 1] += min(count, max_ref_counts[gram])
        stats[row, max_n:2 * max_n] = [max(0, len(hyp) - k) for k in range(max_n)]
        stats[row, -2] = len(hyp)
        stats[row, -1] = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    return stats


def bleu_from_statistics(sums: np.ndarray, max_n: int = MAX_N) -> np.ndarray:
    """(..., 2·max_n + 2) summed :func:`bleu_statistics` → (..., max_n) BLEU-1..max_n (pycocoevalcap's smoothing and "closest" penalty)."""
    tiny, small = 1e-15, 1e-9
    correct, guess = sums[..., :max_n], sums[..., max_n:2 * max_n]
    scores = np.cumprod((correct + tiny) / (guess + small), axis=-1) ** (1.0 / np.arange(1, max_n + 1))
    ratio = (sums[..., -2] + tiny) / (sums[..., -1] + small)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return scores * penalty[..., None]


def bleu(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], max_n: int = MAX_N) -> list[float]:
    """Corpus BLEU-1..max_n of tokenised hypotheses vs lists of tokenised references ("closest" brevity penalty)."""
    return [float(s) for s in bleu_from_statistics(bleu_statistics(hypotheses, references, max_n).sum(0), max_n)]


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


def rouge_l_coco_scores(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], beta: float = 1.2) -> np.ndarray:
    """pycocoevalcap ROUGE-L per report (N,): F_β of the best LCS precision and recall over its references."""
    check_pairs(hypotheses, references, "rouge_l_coco")
    scores = []
    for hyp, refs in zip(hypotheses, references):
        lcs = [lcs_length(ref, hyp) for ref in refs]
        precision = max(common / len(hyp) if hyp else 0.0 for common in lcs)
        recall = max(common / len(r) if r else 0.0 for common, r in zip(lcs, refs))
        scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0)
    return np.array(scores)


def rouge_l_coco(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], beta: float = 1.2) -> float:
    """pycocoevalcap ROUGE-L: the mean over reports of :func:`rouge_l_coco_scores`."""
    return float(np.mean(rouge_l_coco_scores(hypotheses, references, beta)))


def rouge_l_stemmed_scores(hypotheses: Sequence[str], references: Sequence[list[str]]) -> np.ndarray:
    """rouge_score ROUGE-L F-measure with Porter stemming per report (N,), best over its references."""
    from rouge_score import rouge_scorer

    check_pairs(hypotheses, references, "rouge_l_stemmed")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs) for hyp, refs in zip(hypotheses, references)])


def rouge_l_stemmed(hypotheses: Sequence[str], references: Sequence[list[str]]) -> float:
    """rouge_score ROUGE-L F-measure with Porter stemming, best reference per report, mean over reports."""
    return float(np.mean(rouge_l_stemmed_scores(hypotheses, references)))


def cider_d_scores(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], sigma: float = 6.0) -> np.ndarray:
    """pycocoevalcap CIDEr(-D) per report (N,): 10 × mean_n mean_refs clipped tf-idf cosine × length penalty. Document
    frequencies come from the references only, so a report's score does not depend on the other generated reports."""
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
    return np.array(scores)


def cider_d(hypotheses: Sequence[list[str]], references: Sequence[list[list[str]]], sigma: float = 6.0) -> float:
    """pycocoevalcap CIDEr(-D): the mean over reports of :func:`cider_d_scores`."""
    return float(np.mean(cider_d_scores(hypotheses, references, sigma)))


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
