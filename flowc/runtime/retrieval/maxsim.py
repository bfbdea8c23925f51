"""Multi-vector retrieval with averaged MaxSim over sub-queries (POQD, ALGORITHMS.md §3.2).

    SIM(Q, D) = (1/K) Σ_i max_j E(q_i) · E(d_j)

where q_1..q_K are sub-queries of the query Q (written by a decomposer) and d_1..d_m are segments of
the document D. The paper does not say how text documents are segmented; flowc splits each document
into sentences and encodes each one prefixed with the document's title ("Title: sentence"), because a
sentence such as "He was born in 1950." says nothing on its own about whom it describes. This is a
design choice (inferred), not the paper's.

`filter_subqueries` is POQD's hallucination filter: a sub-query keeps only the words that occur in
the original query, so a decomposer cannot smuggle new content into retrieval.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Doc, Hit
from flowc.runtime.retrieval.base import Encoder, FloatArray, check_k, top_k_hits
from flowc.runtime.retrieval.cache import cached_embeddings

__all__ = ["MaxSimRetriever", "filter_subqueries", "split_sentences"]

# Bump when segmentation changes: it is part of the embedding cache key.
SEGMENTATION = "sentences-v1"
# The largest (sub-queries × segments) similarity block scored at once, in floats (128 MB).
MAX_BLOCK = 32_000_000

_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
# Abbreviations after which a period rarely ends a sentence.
_ABBREV = re.compile(r"mrs?|ms|dr|prof|st|jr|sr|vs|etc|inc|ltd|co|corp|no|vol|fig|gen|col|lt|sgt|capt|rev|hon|mt|ft")
_WORD = re.compile(r"\w+(?:['’]\w+)*")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at `.`, `!` or `?` followed by space and a capital or a digit.

    A period after a single letter ("J. R. R. Tolkien", "U.S. Army") or a common abbreviation
    ("Dr.", "St.") does not end a sentence. Empty text gives an empty list.
    """
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        before = text[start : m.start()].rsplit(None, 1)
        last = before[-1].rstrip(".").split(".")[-1].lower() if before else ""
        if text[m.start()] == "." and (len(last) <= 1 or _ABBREV.fullmatch(last)):
            continue
        sentence = text[start : m.end()].strip()
        if sentence:
            out.append(sentence)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def filter_subqueries(subqueries: Sequence[str], query: str) -> list[str]:
    """POQD's hallucination filter: keep only sub-query words that occur in the original query.

    Words are compared case-insensitively (punctuation is dropped); a sub-query left with no words
    is dropped, and duplicates after filtering (ignoring case) are removed, keeping the first.

    Args:
        subqueries: the decomposer's sub-queries.
        query: the original query.

    Returns:
        The filtered sub-queries, possibly empty.
    """
    allowed = {w.lower() for w in _WORD.findall(query)}
    out: list[str] = []
    seen: set[str] = set()
    for sq in subqueries:
        kept = " ".join(w for w in _WORD.findall(sq) if w.lower() in allowed)
        if kept and kept.lower() not in seen:
            seen.add(kept.lower())
            out.append(kept)
    return out


def _segments(doc: Doc) -> list[str]:
    sentences = split_sentences(doc.text) or [doc.title]
    return [f"{doc.title}: {s}" if doc.title else s for s in sentences]


class MaxSimRetriever:
    """Scores each document by the mean over sub-queries of the best-matching sentence similarity.

    Sentence embeddings of the corpus are computed once and cached on disk (keyed by corpus hash,
    encoder `model_id` and segmentation version). `search(query, k)` treats the query as its only
    sub-query (then the score is the best sentence match); `search_subqueries` is the multi-vector
    form.
    """

    def __init__(self, corpus: Corpus, encoder: Encoder, cache_dir: str | Path | None = None) -> None:
        """Segment the corpus into sentences and embed (or load the cached embeddings of) them."""
        self.corpus = corpus
        self.encoder = encoder
        per_doc = [_segments(d) for d in corpus]
        self.segments: list[str] = [s for segs in per_doc for s in segs]
        counts = np.fromiter((len(s) for s in per_doc), dtype=np.int64, count=len(per_doc))
        self._offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.segment_embeddings: FloatArray = cached_embeddings(
            Path(cache_dir) if cache_dir is not None else None,
            corpus_hash=corpus.content_hash,
            model_id=encoder.model_id,
            kind=f"segments-{SEGMENTATION}",
            rows=len(self.segments),
            dim=encoder.dim,
            compute=lambda: encoder.encode(self.segments),
        )

    def similarities(self, subqueries: Sequence[str]) -> FloatArray:
        """SIM(Q, D) for every document D, given the sub-queries of Q (shape: (len(corpus),)).

        Raises:
            FlowcError: `invalid-value` when there are no sub-queries.
        """
        return self.similarities_many([subqueries])[0]

    def search_subqueries(self, subqueries: Sequence[str], k: int, *, query: str | None = None) -> list[Hit]:
        """The k best documents by averaged MaxSim over the sub-queries, best first.

        Args:
            subqueries: the sub-queries q_1..q_K.
            k: how many documents.
            query: the original query; when given, the hallucination filter is applied and, if it
                leaves nothing, the query itself is the only sub-query.
        """
        return self.search_subqueries_many([subqueries], k, queries=None if query is None else [query])[0]

    def search_subqueries_many(
        self, subqueries: Sequence[Sequence[str]], k: int, *, queries: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """`search_subqueries` for several queries, encoding all sub-queries in one batch."""
        check_k(k)
        if queries is not None:
            if len(queries) != len(subqueries):
                raise FlowcError(
                    "invalid-value",
                    f"got {len(subqueries)} sub-query lists for {len(queries)} queries",
                    hint="pass one list of sub-queries per query",
                )
            subqueries = [filter_subqueries(sq, q) or [q] for sq, q in zip(subqueries, queries)]
        scores = self.similarities_many(subqueries)
        return [top_k_hits(self.corpus, row, k) for row in scores]

    def similarities_many(self, subqueries: Sequence[Sequence[str]]) -> FloatArray:
        """SIM(Q, D) for several queries at once, shape (len(subqueries), len(corpus)).

        All sub-queries are encoded in one batch and scored against every segment with one matrix
        product per chunk of sub-queries (chunks keep the (sub-queries × segments) block under
        `MAX_BLOCK` floats); the per-document max and the per-query mean are `reduceat`s.
        """
        return self.similarities_of_vectors(self.encode_subqueries(subqueries))

    def similarities_of_vectors(self, embedded: Sequence[FloatArray]) -> FloatArray:
        """`similarities_many` given each query's sub-query vectors (from `encode_subqueries`)."""
        if not embedded:
            return np.zeros((0, len(self.corpus)), dtype=np.float32)
        out = np.empty((len(embedded), len(self.corpus)), dtype=np.float32)
        per_chunk = max(1, MAX_BLOCK // max(1, len(self.segments)))  # sub-queries per product
        start = 0
        while start < len(embedded):
            stop, rows = start, 0
            while stop < len(embedded) and (rows == 0 or rows + len(embedded[stop]) <= per_chunk):
                rows += len(embedded[stop])
                stop += 1
            group = embedded[start:stop]
            best = self._best_per_document(np.concatenate(group))  # (rows, docs)
            bounds = np.cumsum([0, *(len(g) for g in group)])[:-1]
            counts = np.fromiter((len(g) for g in group), dtype=np.float32, count=len(group))
            out[start:stop] = np.add.reduceat(best, bounds, axis=0) / counts[:, None]
            start = stop
        return out

    def search(self, query: str, k: int) -> list[Hit]:
        """The k best documents with the query as its only sub-query."""
        return self.search_subqueries([query], k)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """`search` for each query, in one encoding batch."""
        return self.search_subqueries_many([[q] for q in queries], k)

    def encode_subqueries(self, groups: Sequence[Sequence[str]]) -> list[FloatArray]:
        """The sub-query vectors of each query, encoded in one batch.

        Raises:
            FlowcError: `invalid-value` when a query has no sub-queries.
        """
        for g in groups:
            if not g or isinstance(g, str):
                raise FlowcError(
                    "invalid-value",
                    "MaxSim retrieval needs a non-empty list of sub-queries"
                    + (", not a string" if isinstance(g, str) else ""),
                    hint="pass the decomposer's sub-queries as a list of strings",
                )
        flat = [s for g in groups for s in g]
        if not flat:
            return []
        emb = self.encoder.encode(flat)
        bounds = np.cumsum([0, *(len(g) for g in groups)])
        return [emb[a:b] for a, b in itertools.pairwise(bounds)]

    def _best_per_document(self, sub_emb: FloatArray) -> FloatArray:
        """max_j E(q_i) · E(d_j) for every sub-query i and document d: (K, docs)."""
        sims = sub_emb @ self.segment_embeddings.T  # (K, segments)
        # Each document's segments are contiguous, so the per-document max is one reduceat.
        return np.maximum.reduceat(sims, self._offsets, axis=1)
