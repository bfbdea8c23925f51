"""A deterministic, model-free encoder for retrieval tests: hashed bag of words, unit length.

from flowc.runtime.resources import RetrieverPool
from flowc.testing.retrieval_fakes import HashEncoder

pool = RetrieverPool(tmp_path / "cache", encoder=HashEncoder())   # dense and maxsim without MiniLM
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["HashEncoder"]


class HashEncoder:
    """Each lowercase word adds 1 to a dimension chosen by its sha256; rows are L2-normalised.

    Texts sharing words get positive cosine, so retrieval is predictable; `calls` records every
    batch so tests can tell a cache hit from a recomputation.
    """

    def __init__(self, dim: int = 64, model_id: str = "hash-bow-64") -> None:
        self._dim = dim
        self._model_id = model_id
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.sha256(w.encode()).hexdigest(), 16) % self._dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
