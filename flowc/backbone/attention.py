"""Grouped-query attention: jax's fused `dot_product_attention` where it applies, a reference otherwise.

`attention()` picks an implementation per call (`implementation="auto"`):

- "cudnn": cuDNN's flash attention on a GPU for bfloat16/float16 inputs under a causal and/or
  key-length mask. It never materializes the (T, S) score matrix (on an H200, B=16, T=1024:
  0.30 GB of temporaries against 2.0 GB for "xla"); jax does not pick it by default, so it is
  asked for explicitly.
- "xla": jax's portable implementation (scores materialized, softmax in float32); the choice on a
  CPU, for float32 on a GPU (cuDNN's kernel is half-precision only), and for any explicit mask.
- "reference": plain einsums, kept for float64 (jax's implementations always take the softmax in
  float32, which would spoil float64 gradient checks) and as the oracle the tests compare against.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from flowc.errors import FlowcError

Implementation = Literal["auto", "cudnn", "xla", "reference"]
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "cudnn", "xla", "reference")


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """softmax(q kᵀ / sqrt(hd)) v with query head h reading kv head h // g (llama.cpp's grouping).

    q (B, T, Hq, hd); k, v (B, S, Hkv, hd); mask (B, T, S) true where attending is allowed.
    Returns (B, T, Hq, hd). Scores and softmax in at least float32.
    """
    b, t, hq, hd = q.shape
    hkv = k.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, hd)
    wide = jnp.promote_types(q.dtype, jnp.float32)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=wide) / np.sqrt(hd)
    scores = jnp.where(mask[:, None, None, :, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, hq, hd)


def choose_implementation(dtype: jnp.dtype, *, has_mask: bool) -> str:
    """The implementation "auto" means for inputs of `dtype` on the default backend."""
    if jnp.dtype(dtype) == jnp.float64:
        return "reference"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if half and not has_mask and jax.default_backend() == "gpu":
        return "cudnn"
    return "xla"


def full_mask(
    t: int, s: int, *, batch: int, causal: bool, kv_lengths: jax.Array | None, mask: jax.Array | None
) -> jax.Array:
    """The (B, T, S) boolean mask that `attention`'s arguments describe (causal aligned top-left)."""
    out = jnp.ones((batch, t, s), dtype=bool)
    if causal:
        out = out & jnp.tril(jnp.ones((t, s), dtype=bool))[None]
    if kv_lengths is not None:
        out = out & (jnp.arange(s)[None, None, :] < kv_lengths[:, None, None])
    if mask is not None:
        out = out & mask
    return out


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = False,
    kv_lengths: jax.Array | None = None,
    mask: jax.Array | None = None,
    implementation: str = "auto",
) -> jax.Array:
    """Grouped-query attention of q (B, T, Hq, hd) over k, v (B, S, Hkv, hd); returns (B, T, Hq, hd).

    Args:
        causal: query i attends keys 0..i (T == S, as in a forward pass from position 0).
        kv_lengths: (B,) int32; keys at index >= kv_lengths[b] are padding (right padding).
        mask: (B, T, S) bool, true where attending is allowed (e.g. per-row cache positions); an
            explicit mask always takes the "xla" or "reference" path.
        implementation: "auto", "cudnn", "xla" or "reference" (see the module docstring).
    """
    impl = choose_implementation(q.dtype, has_mask=mask is not None) if implementation == "auto" else implementation
    if impl == "reference":
        b, t, s = q.shape[0], q.shape[1], k.shape[1]
        return reference_attention(q, k, v, full_mask(t, s, batch=b, causal=causal, kv_lengths=kv_lengths, mask=mask))
    if impl not in ("cudnn", "xla"):
        raise FlowcError(
            "invalid-value",
            f"unknown attention implementation '{impl}'",
            hint=f"use one of: {', '.join(IMPLEMENTATIONS)}",
        )
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=None if mask is None else mask[:, None, :, :],
        is_causal=causal,
        key_value_seq_lengths=None if kv_lengths is None else kv_lengths.astype(jnp.int32),
        implementation="cudnn" if impl == "cudnn" else "xla",
    )
