"""`make_retriever`: a retriever by method name, the way a `retrieve` node declares it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus
from flowc.runtime.retrieval.base import Encoder, Retriever
from flowc.runtime.retrieval.bm25 import BM25Retriever
from flowc.runtime.retrieval.dense import DenseRetriever
from flowc.runtime.retrieval.encoder import MiniLMEncoder
from flowc.runtime.retrieval.maxsim import MaxSimRetriever

__all__ = ["METHODS", "Method", "make_retriever"]

Method = Literal["bm25", "dense", "maxsim"]
METHODS: tuple[str, ...] = get_args(Method)


def make_retriever(
    method: str,
    corpus: Corpus,
    *,
    cache_dir: str | Path | None = None,
    encoder: Encoder | None = None,
) -> Retriever:
    """Build a retriever over a corpus.

    Args:
        method: "bm25", "dense" or "maxsim".
        corpus: the documents.
        cache_dir: where dense and maxsim cache corpus embeddings (None: memory only; see
            `default_cache_dir()` for the conventional place).
        encoder: the encoder for dense and maxsim (default: a new `MiniLMEncoder`); pass one to
            share it between retrievers, since loading it takes about a second.

    Raises:
        FlowcError: `invalid-value` for an unknown method; `model-file-not-found` naming the pip
            command when a needed package is missing.
    """
    if method == "bm25":
        return BM25Retriever(corpus)
    if method in ("dense", "maxsim"):
        enc = encoder if encoder is not None else MiniLMEncoder()
        if method == "dense":
            return DenseRetriever(corpus, enc, cache_dir)
        return MaxSimRetriever(corpus, enc, cache_dir)
    raise FlowcError(
        "invalid-value",
        f"unknown retrieval method '{method}'",
        hint=f"use one of: {', '.join(METHODS)}",
    )
