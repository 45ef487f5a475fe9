"""Pick the top-k profile items to show the model: BM25 relevance (bm25s), recency, or seeded random."""
from __future__ import annotations

import random

import bm25s

from ..logs import quieted
from .records import DataError, Example, ProfileItem

RETRIEVALS = ("bm25", "recency", "random")


def _bm25_scores(texts: list[str], query: str) -> list[float]:
    """BM25 score of each text for the query (bm25s, English stopwords); prints nothing (see harness.logs)."""
    corpus = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    with quieted("bm25s"):  # bm25s logs "Building index from tokens" at DEBUG on a logger it sets to DEBUG
        retriever.index(corpus, show_progress=False)
    query_tokens = bm25s.tokenize(query, stopwords="en", return_ids=False, show_progress=False)[0]
    if not query_tokens:
        return [0.0] * len(texts)
    return [float(s) for s in retriever.get_scores(query_tokens)]


def select_profile(
    example: Example, query: str | None = None, *, k: int, retrieval: str = "bm25", seed: int = 0
) -> list[ProfileItem]:
    """The k best profile items, best first; BM25 ties (and no-overlap queries) go to the more recent item."""
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    items = list(example.profile)
    if retrieval == "bm25":
        scores = _bm25_scores([item.text for item in items], example.input if query is None else query)
        ranked = sorted(zip(scores, items), key=lambda pair: (-pair[0], -pair[1].position))
        return [item for _, item in ranked[:k]]
    if retrieval == "recency":
        return sorted(items, key=lambda item: -item.position)[:k]
    if retrieval == "random":
        rng = random.Random(f"{seed}:{example.example_id}")  # str seeds are stable across runs
        return rng.sample(items, min(k, len(items)))
    raise DataError(f"unknown profile retrieval {retrieval!r}; retrievals: {', '.join(RETRIEVALS)}")
