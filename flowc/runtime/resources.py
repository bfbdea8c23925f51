"""Corpora and retrievers a run needs, loaded once and shared by every run of an executor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, load_corpus

if TYPE_CHECKING:  # retrieval loads numpy: only a pipeline that retrieves pays for it (start-up)
    from flowc.runtime.retrieval.base import Encoder, Retriever


class RetrieverPool:
    """Builds each (corpus file, method) retriever on first use; later uses share it.

    Corpus embeddings (dense, maxsim) are kept on disk under `cache_dir` (default:
    `default_cache_dir()`, i.e. `$FLOWC_CACHE_DIR/embeddings` or `~/.cache/flowc/embeddings`), so a
    corpus is encoded once per encoder, not once per run. `encoder` replaces the MiniLM encoder
    (tests pass a model-free one).
    """

    def __init__(self, cache_dir: Path | None = None, *, encoder: Encoder | None = None) -> None:
        self._cache_dir = cache_dir
        self._corpora: dict[Path, Corpus] = {}
        self._retrievers: dict[tuple[Path, str], Retriever] = {}
        self._encoder: Encoder | None = encoder
        self._lock = asyncio.Lock()

    def corpus(self, path: Path) -> Corpus:
        path = path.resolve()
        if path not in self._corpora:
            if not path.is_file():
                raise FlowcError(
                    "corpus-not-found",
                    f"corpus file '{path}' does not exist",
                    hint="corpus paths are relative to the spec that declares them",
                )
            self._corpora[path] = load_corpus(path)
        return self._corpora[path]

    async def get(self, path: Path, method: str) -> Retriever:
        key = (path.resolve(), method)
        if key in self._retrievers:
            return self._retrievers[key]
        async with self._lock:
            if key not in self._retrievers:
                self._retrievers[key] = await asyncio.to_thread(self._build, key[0], method)
        return self._retrievers[key]

    def _build(self, path: Path, method: str) -> Retriever:
        from flowc.runtime.retrieval.cache import default_cache_dir
        from flowc.runtime.retrieval.factory import make_retriever

        corpus = self.corpus(path)
        if method != "bm25" and self._encoder is None:
            from flowc.runtime.retrieval.encoder import MiniLMEncoder

            self._encoder = MiniLMEncoder()
        cache = self._cache_dir if self._cache_dir is not None else default_cache_dir()
        return make_retriever(method, corpus, cache_dir=cache, encoder=self._encoder)
