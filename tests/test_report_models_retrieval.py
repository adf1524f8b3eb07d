"""CXR-RePaiR retrieval: right neighbours on constructed embeddings, blockwise top-k = brute force, Select, index round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.retrieval import CorpusIndex, corpus_texts, select_reports, split_sentences, topk_dot

IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "Moderate cardiomegaly. Small left pleural effusion.",
    "no acute cardiopulmonary process.",
    "Right lower lobe pneumonia.\nSmall left pleural effusion.",
]


def test_corpus_is_deduplicated_case_insensitively_at_both_levels():
    assert corpus_texts(IMPRESSIONS, "report") == [IMPRESSIONS[0], IMPRESSIONS[1], IMPRESSIONS[3]]
    assert corpus_texts(IMPRESSIONS, "sentence") == [
        "No acute cardiopulmonary process.", "Moderate cardiomegaly.", "Small left pleural effusion.", "Right lower lobe pneumonia.",
    ]
    assert split_sentences("1. No effusion. 2. Mild edema.") == ["1. No effusion.", "2. Mild edema."]
    with pytest.raises(UserError, match="level"):
        corpus_texts(IMPRESSIONS, "word")


def _one_hot_embedder(texts: list[str]) -> np.ndarray:
    """Each sentence gets its own axis (by a fixed vocabulary of the four corpus sentences), scaled to test normalisation."""
    axes = ["no acute", "cardiomegaly", "effusion", "pneumonia"]
    out = np.zeros((len(texts), 4), dtype=np.float32)
    for i, text in enumerate(texts):
        for j, axis in enumerate(axes):
            if axis in text.lower():
                out[i, j] = 3.0 + j
    return out


def test_topk_returns_the_constructed_neighbours_best_first():
    index = CorpusIndex.build(IMPRESSIONS, _one_hot_embedder, level="sentence", batch_size=3)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, rtol=1e-6)
    queries = np.array([[0, 0, 1, 0.2], [5, 0, 0, 0], [0, 1, 0.5, 0]], dtype=np.float32)  # effusion>pneumonia, normal, cardiomegaly>effusion
    scores, ids = index.topk(queries, k=2)
    texts = [[index.texts[i] for i in row] for row in ids.tolist()]
    assert texts[0] == ["Small left pleural effusion.", "Right lower lobe pneumonia."]
    assert texts[1][0] == "No acute cardiopulmonary process."  # the other three tie at 0
    assert texts[2] == ["Moderate cardiomegaly.", "Small left pleural effusion."]
    assert torch.all(scores[:, 0] >= scores[:, 1])
    assert index.reports(ids, k=1)[2] == "Moderate cardiomegaly."
    assert index.reports(ids)[0] == "Small left pleural effusion. Right lower lobe pneumonia."


def test_blockwise_topk_equals_brute_force():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1000, 16)).astype(np.float32)
    queries = torch.from_numpy(rng.standard_normal((37, 16)).astype(np.float32))
    scores, ids = topk_dot(queries, corpus, k=6, corpus_block=97, query_chunk=10)
    brute_scores, brute_ids = (queries @ torch.from_numpy(corpus).T).topk(6, dim=1)
    assert torch.equal(ids, brute_ids)
    torch.testing.assert_close(scores, brute_scores)


def test_index_round_trips_memory_mapped(tmp_path):
    index = CorpusIndex.build(IMPRESSIONS, _one_hot_embedder, level="report", encoder="one-hot")
    index.save(tmp_path / "index")
    loaded = CorpusIndex.load(tmp_path / "index")
    assert isinstance(loaded.embeddings, np.memmap)
    assert loaded.texts == index.texts and loaded.level == "report" and loaded.encoder == "one-hot"
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), index.embeddings)
    queries = np.eye(4, dtype=np.float32)
    assert torch.equal(loaded.topk(queries, 2)[1], index.topk(queries, 2)[1])
    (tmp_path / "index" / "texts.json").unlink()
    with pytest.raises(UserError, match="missing texts.json"):
        CorpusIndex.load(tmp_path / "index")
    with pytest.raises(UserError, match="dimension"):
        index.topk(np.zeros((2, 5), dtype=np.float32), 1)


def test_select_keeps_top1_only_when_the_labeler_says_no_finding():
    top1 = ["No acute cardiopulmonary process.", "Moderate cardiomegaly.", "Lungs are clear. No effusion."]
    top6 = ["six-a", "six-b", "six-c"]
    assert select_reports(top1, top6) == [top1[0], "six-b", top1[2]]  # the in-house labeler reads No Finding on 1 and 3
    always_abnormal = lambda texts: np.zeros((len(texts), 14), dtype=np.float32)
    assert select_reports(top1, top6, always_abnormal) == top6
