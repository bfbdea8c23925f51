"""BM25 over a corpus with bm25s (sparse-matrix BM25, no model needed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowc.runtime.corpus import Corpus, Hit
from flowc.runtime.retrieval._deps import require
from flowc.runtime.retrieval.base import check_k, top_k_hits

__all__ = ["BM25Retriever"]

PIP = "pip install bm25s"


class BM25Retriever:
    """Lexical retrieval: BM25 (Lucene variant, k1=1.5, b=0.75) over each document's title and text.

    Tokenization is bm25s's: lowercase, words of two or more characters, English stopwords removed,
    no stemming. The index is built once in the constructor. Only documents sharing at least one term
    with the query are returned; ties are broken by corpus position.
    """

    def __init__(self, corpus: Corpus, *, k1: float = 1.5, b: float = 0.75) -> None:
        """Index the corpus.

        Raises:
            FlowcError: `model-file-not-found` when bm25s is not installed.
        """
        self.corpus = corpus
        logger = logging.getLogger("bm25s")
        level = logger.level
        self._bm25s: Any = require("bm25s", pip=PIP, purpose="BM25 retrieval")
        logger.setLevel(level)  # bm25s sets its logger to DEBUG when imported: keep the CLI's setting
        tokens = self._tokenize(corpus.contents())
        self._model = self._bm25s.BM25(k1=k1, b=b)
        self._model.index(tokens, show_progress=False)
        self._vocab: dict[str, int] = self._model.vocab_dict

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        out: list[list[str]] = self._bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
        return out

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for a query (zeros when no query term is indexed)."""
        ids = [self._vocab[t] for t in self._tokenize([query])[0] if t in self._vocab]
        if not ids:
            return np.zeros(len(self.corpus), dtype=np.float32)
        return np.asarray(self._model.get_scores_from_ids(ids), dtype=np.float32)

    def search(self, query: str, k: int) -> list[Hit]:
        """The k best documents for a query, best first."""
        return top_k_hits(self.corpus, self.scores(query), check_k(k), positive_only=True)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for each query."""
        check_k(k)
        return [self.search(q, k) for q in queries]
