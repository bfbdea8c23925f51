"""On-disk cache of embedding matrices, one `.npy` file per (corpus hash, model id, kind).

Files are plain `.npy` (loaded with `allow_pickle=False`) written atomically (temp file + rename),
so a killed run never leaves a half-written cache behind. A file with the wrong shape or dtype is
treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowc.runtime.retrieval.base import FloatArray

__all__ = ["cached_embeddings", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$FLOWC_CACHE_DIR/embeddings`, or `~/.cache/flowc/embeddings`."""
    root = os.environ.get("FLOWC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "flowc") / "embeddings"


def cache_path(cache_dir: Path, corpus_hash: str, model_id: str, kind: str) -> Path:
    """The file for one embedding matrix; readable names, with a digest so that any id is safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:80]
    digest = hashlib.sha256(f"{corpus_hash}\0{model_id}\0{kind}".encode()).hexdigest()[:16]
    return cache_dir / f"{kind}-{safe}-{corpus_hash[:16]}-{digest}.npy"


def cached_embeddings(
    cache_dir: Path | None,
    *,
    corpus_hash: str,
    model_id: str,
    kind: str,
    rows: int,
    dim: int,
    compute: Callable[[], FloatArray],
) -> FloatArray:
    """Load an embedding matrix from the cache, or compute it and store it.

    Args:
        cache_dir: the cache folder; None computes without caching.
        corpus_hash: `Corpus.content_hash`.
        model_id: `Encoder.model_id`.
        kind: what the rows are ("docs", "segments-sentences-v1", ...).
        rows: the expected number of rows (a cached file of another shape is stale).
        dim: the expected vector size.
        compute: produces the matrix on a miss.
    """
    if cache_dir is None:
        return compute()
    path = cache_path(Path(cache_dir), corpus_hash, model_id, kind)
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (rows, dim) and arr.dtype == np.float32:
                log.debug("embeddings cache hit: %s", path)
                return arr
            log.warning(
                "embeddings cache %s has shape %s %s, expected (%d, %d) float32; recomputing",
                path,
                arr.shape,
                arr.dtype,
                rows,
                dim,
            )
        except (OSError, ValueError) as e:
            log.warning("embeddings cache %s is unreadable (%s); recomputing", path, e)
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arr
