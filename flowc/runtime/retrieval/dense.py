"""Dense (single-vector) retrieval: cosine similarity between a query and each document's embedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flowc.runtime.corpus import Corpus, Hit
from flowc.runtime.retrieval.base import Encoder, FloatArray, check_k, top_k_hits
from flowc.runtime.retrieval.cache import cached_embeddings

__all__ = ["DenseRetriever"]


class DenseRetriever:
    """Embeds every document (title and text) once, then ranks by dot product with the query vector.

    The encoder's vectors are unit length, so the dot product is the cosine similarity. Document
    embeddings are cached on disk under `cache_dir`, keyed by the corpus hash and the encoder's
    `model_id`; with `cache_dir=None` they live in memory only.
    """

    def __init__(self, corpus: Corpus, encoder: Encoder, cache_dir: str | Path | None = None) -> None:
        """Embed (or load the cached embeddings of) the corpus."""
        self.corpus = corpus
        self.encoder = encoder
        self.doc_embeddings: FloatArray = cached_embeddings(
            Path(cache_dir) if cache_dir is not None else None,
            corpus_hash=corpus.content_hash,
            model_id=encoder.model_id,
            kind="docs",
            rows=len(corpus),
            dim=encoder.dim,
            compute=lambda: encoder.encode(corpus.contents()),
        )

    def search(self, query: str, k: int) -> list[Hit]:
        """The k most similar documents, best first."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for each query, encoding all queries in one batch."""
        check_k(k)
        if not queries:
            return []
        scores = self.encoder.encode(list(queries)) @ self.doc_embeddings.T
        return [top_k_hits(self.corpus, row, k) for row in scores]
