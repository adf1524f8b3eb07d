"""CXR-RePaiR retrieval speed on CPU: 10k image queries against a 200k-sentence corpus (CLIP ViT-B/32 width 512).

Times :meth:`CorpusIndex.topk` (blockwise matrix products over the memory-mapped index, running
top-6 merge) against the plain loop it replaces: one ``corpus @ query`` and ``topk`` per query in
torch. The loop is timed on the first ``--loop-queries`` queries and its per-query time scaled to
all queries (``--loop-queries 10000`` times it in full); both must return the same neighbours
on those queries. Random unit vectors stand in for embeddings: the work does not depend on
their values. Usage: ``python benchmarks/retrieval.py [--queries 10000 --corpus 200000 --threads 1]``;
the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from cxr_irgen.report_models.retrieval import CorpusIndex, l2_normalise


def per_query_loop(queries: torch.Tensor, corpus: torch.Tensor, k: int) -> torch.Tensor:
    """The obvious implementation: one matrix-vector product and top-k per query."""
    return torch.stack([(corpus @ query).topk(k).indices for query in queries])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--corpus", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--loop-queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    corpus = l2_normalise(rng.standard_normal((args.corpus, args.dim), dtype=np.float32))
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        CorpusIndex([f"sentence {i}" for i in range(args.corpus)], corpus, "sentence", "random").save(tmp)
        index = CorpusIndex.load(tmp)  # memory-mapped, as at inference
        start = time.perf_counter()
        _, ids = index.topk(queries, args.k)
        ours_s = time.perf_counter() - start

    n_loop = min(args.loop_queries, args.queries)
    normalised = l2_normalise(torch.from_numpy(queries[:n_loop]))
    corpus_t = torch.from_numpy(corpus)
    start = time.perf_counter()
    loop_ids = per_query_loop(normalised, corpus_t, args.k)
    loop_s = (time.perf_counter() - start) * args.queries / n_loop
    agree = float((loop_ids == ids[:n_loop]).all(dim=1).float().mean())

    print(json.dumps({
        "benchmark": "retrieval_topk", "queries": args.queries, "corpus": args.corpus, "dim": args.dim, "k": args.k,
        "threads": args.threads, "ours_s": round(ours_s, 3), "per_query_loop_s": round(loop_s, 3),
        "per_query_loop_timed_queries": n_loop, "speedup": round(loop_s / ours_s, 2), "same_neighbours": agree,
    }))


if __name__ == "__main__":
    main()
