"""Text metrics vs pycocoevalcap / rouge_score on real IU reports; report guards vs a plain Levenshtein."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from cxr_irgen.eval.report_guards import TrainingReportIndex, edit_similarity, normalise, report_guards
from cxr_irgen.text.text_metrics import bleu, cider_d, lcs_length, meteor, rouge_l_coco, text_metrics, tokenize


@pytest.fixture(scope="module")
def iu_pairs():
    """150 IU findings as hypotheses scored against 150 others (1 reference each, some with 2)."""
    from cxr_irgen.data.iu_xray import load_iu_reports

    reports = load_iu_reports()
    findings = reports.loc[reports["findings"].str.len() > 0, "findings"].tolist()
    hyps = findings[:150]
    refs = [[r] if i % 3 else [r, findings[300 + i]] for i, r in enumerate(findings[150:300])]
    return hyps, refs


def _coco_inputs(hyps, refs):
    gts = {i: [" ".join(tokenize(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hyps)}
    return gts, res


def test_bleu_rouge_cider_match_pycocoevalcap(iu_pairs, capsys):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = iu_pairs
    gts, res = _coco_inputs(hyps, refs)
    ours = text_metrics(hyps, refs, with_meteor=False)
    coco_bleu, _ = Bleu(4).compute_score(gts, res)
    capsys.readouterr()  # pycocoevalcap prints its BLEU internals
    assert np.allclose([ours[f"bleu{k}"] for k in range(1, 5)], coco_bleu, rtol=1e-12, atol=0)
    assert ours["rougeL_coco"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-12)
    assert ours["cider_d"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-9)
    assert 0.1 < ours["bleu1"] < 0.6 and ours["bleu4"] < ours["bleu1"]


def test_rouge_l_stemmed_matches_rouge_score(iu_pairs):
    from rouge_score import rouge_scorer

    hyps, refs = iu_pairs
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = np.mean([max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)])
    assert text_metrics(hyps, refs, with_meteor=False)["rougeL_f_stem"] == pytest.approx(expected, rel=1e-12)


def test_bleu_brevity_penalty_uses_closest_reference():
    hyp = [["a", "b", "c", "d"]]
    # closest reference length is 5 (|4-5| < |4-9|): BP = exp(1 - 5/4); BLEU-1 precision 1
    refs = [[["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "x", "y", "z", "w", "v"]]]
    assert bleu(hyp, refs)[0] == pytest.approx(np.exp(1 - 5 / 4), rel=1e-9)


def test_references_are_never_truncated():
    long_ref = " ".join(["word"] * 2000)
    assert len(tokenize(long_ref)) == 2000
    # a 2000-token reference against a 1-token hypothesis: BP = exp(1 - 2000)
    assert text_metrics(["word"], [long_ref], with_meteor=False)["bleu1"] == pytest.approx(np.exp(1 - 2000), abs=1e-300)


def test_lcs_matches_dynamic_programme():
    from pycocoevalcap.rouge.rouge import my_lcs

    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert lcs_length(a, b) == my_lcs(a, b)


def test_identical_reports_score_perfectly():
    texts = ["Mild cardiomegaly. No pleural effusion.", "The lungs are clear, no pneumothorax."]
    out = text_metrics(texts, texts, with_meteor=False)
    assert out["bleu4"] == pytest.approx(1.0) and out["rougeL_coco"] == pytest.approx(1.0) and out["rougeL_f_stem"] == pytest.approx(1.0)
    assert rouge_l_coco([[]], [[["a"]]]) == 0.0 and cider_d([["a"]], [[["a"]]]) == 0.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java on PATH")
def test_meteor_runs_when_java_is_present():
    """One Java start (~30 s: the jar loads its paraphrase table): a perfect match scores near 1."""
    assert meteor(["mild cardiomegaly", "no pleural effusion"], [["mild cardiomegaly"], ["no pleural effusion"]]) > 0.9


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _levenshtein_to_all(a: str, texts: list[str]) -> np.ndarray:
    """The same dynamic programme from ``a`` to every text at once, one row at a time with numpy (the left-neighbour
    term is a running minimum); texts are padded with a code no character has, and each is read at its own length."""
    width = max(map(len, texts)) + 1
    codes = np.full((len(texts), width - 1), -1, dtype=np.int64)
    for k, t in enumerate(texts):
        codes[k, : len(t)] = [ord(c) for c in t]
    columns = np.arange(width)
    row = np.tile(columns, (len(texts), 1))
    for i, ca in enumerate(a, 1):
        candidate = np.concatenate((np.full((len(texts), 1), i), np.minimum(row[:, 1:] + 1, row[:, :-1] + (codes != ord(ca)))), axis=1)
        row = np.minimum.accumulate(candidate - columns, axis=1) + columns
    return row[np.arange(len(texts)), [len(t) for t in texts]]


def _mutate(text: str, edits: int, rng: random.Random) -> str:
    """``edits`` random substitutions, insertions and deletions."""
    chars = list(text)
    for _ in range(edits):
        op, at = rng.choice("sid"), rng.randrange(len(chars))
        if op == "s":
            chars[at] = rng.choice("abcxyz .")
        elif op == "i":
            chars.insert(at, rng.choice("abcxyz ."))
        else:
            del chars[at]
    return "".join(chars)


def test_edit_similarity_and_near_copy_search_match_plain_levenshtein():
    """Queries are fresh mutations (none in the index, so the exact-match shortcut never answers) with 1-9 edits of
    ~80-character reports, i.e. on both sides of the 0.95 threshold (4 edits). Control: brute force over every report."""
    rng = random.Random(1)
    base = "the heart size is normal. no pleural effusion or pneumothorax. lungs are clear."
    training = [_mutate(base, rng.randint(0, 12), rng) for _ in range(40)]
    training += ["mild cardiomegaly with small effusions." * rng.randint(1, 3) for _ in range(10)]
    index = TrainingReportIndex(training + ["unrelated"], threshold=0.95)
    queries = [normalise(_mutate(rng.choice(training), rng.randint(1, 9), rng)) for _ in range(70)]
    queries = [q for q in queries if q not in index.exact] + ["completely different text about a fracture of the seventh rib."]
    best = []
    for q in queries:
        distances = _levenshtein_to_all(q, index.reports)
        assert distances[-1] == _levenshtein(q, index.reports[-1])
        assert edit_similarity(q, base) == pytest.approx(1 - _levenshtein(q, base) / max(len(q), len(base)))
        similarities = [1 - d / max(len(q), len(t)) for d, t in zip(distances, index.reports)]
        copy = index.nearest_copy(q)
        assert (copy is not None) == (max(similarities) >= 0.95), (q, max(similarities))
        assert copy is None or similarities[index.reports.index(copy)] >= 0.95
        best.append(max(similarities))
    assert sum(s >= 0.95 for s in best) >= 15 and sum(s < 0.95 for s in best) >= 15  # both answers are exercised
    assert sum(0.93 <= s < 0.97 for s in best) >= 15  # many queries sit at the threshold


def test_report_guards_distinct_and_copy_share():
    training = ["No acute cardiopulmonary process.", "Mild cardiomegaly. Small left effusion."]
    generated = ["no acute  cardiopulmonary process.", "No acute cardiopulmonary process!", "A totally new sentence.", "A totally new sentence."]
    out = report_guards(generated, training)
    assert out["distinct_share"] == pytest.approx(3 / 4)
    assert out["copy_share"] == pytest.approx(2 / 4)  # verbatim after normalising, and one character off
