"""A response cache on disk: the same request to the same compiled pipeline is answered once.

`ResponseCache` is one SQLite file with one table. The key is sha256 of the request's canonical
key and the artifact hash of the compiled pipeline, so a cache never serves answers across
artifacts that a change of prompts or weights has made different. Each write commits on its own
in WAL mode, so a crash loses at most the call in flight and never corrupts the file.

`CachedLM(inner, cache, artifact_hash)` wraps any `LMClient`. A request sampled at temperature > 0
without a seed is not deterministic, so it bypasses the cache (both ways). A hit comes back with
`cached=True` and cost 0. Concurrent misses for the same key are coalesced into one call.

Only replies that a node could read stay cached: when a node cannot parse a reply it calls
`forget(lm, request)`, which drops that reply, so a rerun after the model or server is fixed asks
again instead of replaying the failure (wrappers reach the cache through their `.inner`).

Requests carry no credentials (keys live in the environment), and only the response is stored,
never the request, so the file holds no secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from flowc.runtime.lm import LMClient, LMRequest, LMResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(request: LMRequest, artifact_hash: str) -> str:
    """sha256 over the request key and the artifact hash."""
    return hashlib.sha256(f"{request.key()}:{artifact_hash}".encode()).hexdigest()


def cacheable(request: LMRequest) -> bool:
    """Whether a request's answer is reproducible: greedy, or sampled with a fixed seed."""
    return request.temperature <= 0 or request.seed is not None


class ResponseCache:
    """A SQLite-backed map from cache key to `LMResponse`; safe to share between threads.

    Args:
        path: the database file (created with its folder); ":memory:" for a throwaway cache.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: SQLite calls on a small local file take microseconds,
        # far less than a thread hop, so they run inline on the event loop's thread.
        self._conn = sqlite3.connect(str(self.path or ":memory:"), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if self.path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only an OS crash can lose the
            # last commits), and avoids an fsync per write.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)

    def get(self, key: str) -> LMResponse | None:
        """The stored response, or None."""
        with self._lock:
            row = self._conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return LMResponse.model_validate_json(row[0])

    def put(self, key: str, response: LMResponse) -> None:
        """Store a response (replacing any under the same key); committed before returning."""
        blob = response.model_dump_json(exclude={"cached"})
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, response, created) VALUES (?, ?, ?, ?)",
                (key, response.model, blob, time.time()),
            )

    def delete(self, key: str) -> None:
        """Remove the response under `key`, if any."""
        with self._lock:
            self._conn.execute("DELETE FROM responses WHERE key = ?", (key,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        """Remove every stored response."""
        with self._lock:
            self._conn.execute("DELETE FROM responses")

    def close(self) -> None:
        """Close the database (further use raises)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class CachedLM:
    """An `LMClient` that answers repeated deterministic requests from a `ResponseCache`.

    Attributes:
        hits, misses, bypassed, forgotten: counters, for tests and run reports.
    """

    def __init__(self, inner: LMClient, cache: ResponseCache, artifact_hash: str) -> None:
        self.inner = inner
        self.cache = cache
        self.artifact_hash = artifact_hash
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.forgotten = 0
        self._inflight: dict[str, asyncio.Future[LMResponse]] = {}

    async def complete(self, request: LMRequest) -> LMResponse:
        """The cached answer, or the inner client's (then stored)."""
        if not cacheable(request):
            self.bypassed += 1
            return await self.inner.complete(request)
        key = cache_key(request, self.artifact_hash)
        stored = self.cache.get(key)
        if stored is not None:
            self.hits += 1
            return stored.model_copy(update={"cached": True, "cost_usd": 0.0, "latency_s": 0.0})
        pending = self._inflight.get(key)
        if pending is not None:
            # Another task is already asking the same question: share its answer.
            self.hits += 1
            result = await asyncio.shield(pending)
            return result.model_copy(update={"cached": True, "cost_usd": 0.0, "latency_s": 0.0})
        self.misses += 1
        future: asyncio.Future[LMResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await self.inner.complete(request)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(e)
                future.exception()  # mark retrieved: waiters re-raise it, no "never retrieved" log
            raise
        finally:
            self._inflight.pop(key, None)
        self.cache.put(key, response)
        future.set_result(response)
        return response

    def forget(self, request: LMRequest) -> None:
        """Drop the stored answer to `request` (a reply its node could not read)."""
        if cacheable(request):
            self.forgotten += 1
            self.cache.delete(cache_key(request, self.artifact_hash))


def forget(lm: LMClient, request: LMRequest) -> None:
    """Tell the response cache behind `lm` (found through wrappers' `.inner`) to drop the answer
    to `request`; nothing happens when there is no cache."""
    current: object = lm
    for _ in range(16):  # wrappers nest a few deep; a cycle must not hang a run
        drop = getattr(current, "forget", None)
        if callable(drop):
            drop(request)
            return
        current = getattr(current, "inner", None)
        if current is None:
            return
