"""The retriever contract: `search(query, k) -> list[Hit]` and `search_many(queries, k)`.

Every retriever is built once over a `Corpus` (index or embeddings computed in the constructor or
loaded from a cache) and then answers any number of queries. Results are ordered by score, highest
first; ties are broken by the document's position in the corpus, so results are deterministic. A
retriever returns at most `k` hits, and fewer only when the corpus is smaller than `k` or (BM25) when
fewer documents share a term with the query.

Encoders turn texts into L2-normalised float32 vectors; `model_id` names the model and every setting
that changes the vectors, so it can key an embedding cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Hit

__all__ = ["Encoder", "Retriever", "check_k", "top_k_hits"]

FloatArray = npt.NDArray[np.float32]


@runtime_checkable
class Retriever(Protocol):
    """Top-k search over a fixed corpus."""

    corpus: Corpus

    def search(self, query: str, k: int) -> list[Hit]:
        """The k best documents for one query, best first."""
        ...

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for each query (retrievers batch the work where they can)."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """Texts to unit-length vectors."""

    @property
    def model_id(self) -> str:
        """Names the model and every setting that changes its vectors (a cache key)."""
        ...

    @property
    def dim(self) -> int:
        """The vector size."""
        ...

    def encode(self, texts: Sequence[str]) -> FloatArray:
        """An array of shape (len(texts), dim), float32, each row of L2 norm 1 (or 0 for no tokens)."""
        ...


def check_k(k: int) -> int:
    """Validate a top-k argument.

    Raises:
        FlowcError: `invalid-value` when k is not a positive integer.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FlowcError("invalid-value", f"top-k must be a positive integer, got {k!r}", hint="use k >= 1")
    return k


def top_k_hits(corpus: Corpus, scores: npt.NDArray[np.floating], k: int, *, positive_only: bool = False) -> list[Hit]:
    """The k highest-scoring documents, ties broken by corpus position.

    Args:
        corpus: the documents the scores belong to (same order).
        scores: one score per document.
        k: how many to return.
        positive_only: drop documents whose score is not > 0 (BM25: no shared term).
    """
    n = len(scores)
    k = min(k, n)
    # argpartition first keeps this O(n) on large corpora; the exact order (and the tie rule) is
    # settled by a stable sort of the candidates, whose boundary ties we include in full.
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = cand[np.lexsort((cand, -scores[cand].astype(np.float64)))][:k]
    hits = [Hit(corpus[int(i)], float(scores[i])) for i in order]
    if positive_only:
        hits = [h for h in hits if h.score > 0.0]
    return hits
