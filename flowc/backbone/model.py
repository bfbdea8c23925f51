"""The Llama-family decoder in jax: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

Parameters are a plain pytree (nested dicts of arrays) so that optax, `jax.grad` and the savers
need nothing special. Per-layer weights are stacked on a leading layer axis and the blocks run
under `jax.lax.scan`: one block is traced and compiled, not thirty. Weight matrices are stored as
`(n_in, n_out)`, so a projection is `x @ w`.

LoRA adapters (see `lora.py`) ride along as a second pytree of the same stacked shape; the frozen
base weights are never copied or changed during training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowc.backbone.attention import attention as attend
from flowc.backbone.config import ModelConfig
from flowc.backbone.gguf_io import GGUFModelFile

Params = dict[str, Any]

# Projection name inside a layer -> the GGUF tensor it comes from.
PROJECTIONS: dict[str, str] = {
    "wq": "attn_q",
    "wk": "attn_k",
    "wv": "attn_v",
    "wo": "attn_output",
    "w_gate": "ffn_gate",
    "w_up": "ffn_up",
    "w_down": "ffn_down",
}
_BIASES: dict[str, str] = {"bq": "attn_q", "bk": "attn_k", "bv": "attn_v"}


def load_params(f: GGUFModelFile, dtype: Any = jnp.float32) -> Params:
    """Dequantize a GGUF model's weights into the stacked parameter pytree."""
    cfg = f.config
    layers: dict[str, list[np.ndarray]] = {}
    for i in range(cfg.n_layers):
        blk = f"blk.{i}."
        layers.setdefault("attn_norm", []).append(f.tensor(blk + "attn_norm.weight"))
        layers.setdefault("ffn_norm", []).append(f.tensor(blk + "ffn_norm.weight"))
        for key, name in PROJECTIONS.items():
            layers.setdefault(key, []).append(f.tensor(f"{blk}{name}.weight").T)
        if cfg.qkv_bias:
            for key, name in _BIASES.items():
                layers.setdefault(key, []).append(f.tensor(f"{blk}{name}.bias"))
    params: Params = {
        "embed": jnp.asarray(f.tensor("token_embd.weight"), dtype),
        "norm": jnp.asarray(f.tensor("output_norm.weight"), dtype),
        "layers": {k: jnp.asarray(np.stack(v), dtype) for k, v in layers.items()},
    }
    if not cfg.tied_embeddings:
        params["lm_head"] = jnp.asarray(f.tensor("output.weight").T, dtype)
    return params


def init_params(key: jax.Array, cfg: ModelConfig, *, scale: float = 0.02) -> Params:
    """Random weights of the right shapes (for tests and tiny configs)."""
    shapes: dict[str, tuple[int, ...]] = {
        "wq": (cfg.dim, cfg.q_dim),
        "wk": (cfg.dim, cfg.kv_dim),
        "wv": (cfg.dim, cfg.kv_dim),
        "wo": (cfg.q_dim, cfg.dim),
        "w_gate": (cfg.dim, cfg.hidden_dim),
        "w_up": (cfg.dim, cfg.hidden_dim),
        "w_down": (cfg.hidden_dim, cfg.dim),
    }
    if cfg.qkv_bias:
        shapes.update(bq=(cfg.q_dim,), bk=(cfg.kv_dim,), bv=(cfg.kv_dim,))
    keys = jax.random.split(key, len(shapes) + 4)
    layers = {k: scale * jax.random.normal(kk, (cfg.n_layers, *s)) for (k, s), kk in zip(shapes.items(), keys)}
    n = len(shapes)
    layers["attn_norm"] = 1.0 + 0.1 * jax.random.normal(keys[n], (cfg.n_layers, cfg.dim))
    layers["ffn_norm"] = 1.0 + 0.1 * jax.random.normal(keys[n + 1], (cfg.n_layers, cfg.dim))
    params: Params = {
        "embed": scale * jax.random.normal(keys[n + 2], (cfg.vocab_size, cfg.dim)),
        "norm": jnp.ones((cfg.dim,)),
        "layers": layers,
    }
    if not cfg.tied_embeddings:
        params["lm_head"] = scale * jax.random.normal(keys[n + 3], (cfg.dim, cfg.vocab_size))
    return params


def _wide(x: jax.Array) -> jax.Array:
    """`x` in at least float32 (bfloat16 inputs are widened; float64 ones, in tests, are kept)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """x / rms(x) * w, computed in at least float32."""
    x32 = _wide(x)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (y * w).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Rotary embedding of `x` (B, T, H, hd) at integer `positions` (B, T).

    "normal" rotates adjacent pairs (x[2i], x[2i+1]): llama.cpp's LLAMA layout, which GGUF files of
    Llama models are converted to. "neox" rotates (x[i], x[i + hd/2]), as Qwen2 files keep it.
    """
    half = cfg.head_dim // 2
    inv = cfg.rope_theta ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / cfg.head_dim)
    ang = positions.astype(jnp.promote_types(x.dtype, jnp.float32))[..., None] * inv  # (B, T, half)
    cos, sin = jnp.cos(ang)[:, :, None, :], jnp.sin(ang)[:, :, None, :]
    xf = _wide(x)
    if cfg.rope_style == "normal":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(x.shape)
    else:
        x1, x2 = xf[..., :half], xf[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return out.astype(x.dtype)


def cast_params(tree: Any, dtype: Any) -> Any:
    """`tree` with every floating-point array cast to `dtype` (integer arrays kept).

    Casting the frozen base to bfloat16 is how a step computes in bfloat16: activations follow the
    embedding's dtype, and LoRA factors (kept in float32 as master weights) are cast at use.
    """

    def cast(x: Any) -> Any:
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _proj(x: jax.Array, layer: Params, lora: Params, name: str, scale: float) -> jax.Array:
    y = x @ layer[name]
    ad = lora.get(name)
    if ad is not None:
        # The low-rank path is added, never merged, while training: the base weight stays frozen.
        # Factors are cast to the compute dtype here, so float32 master weights get float32
        # gradients through the cast while the products run in the activations' dtype.
        y = y + scale * ((x @ ad["a"].astype(x.dtype)) @ ad["b"].astype(x.dtype))
    return y


def _block_qkv(
    x: jax.Array, layer: Params, lora: Params, positions: jax.Array, cfg: ModelConfig, scale: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    b, t, _ = x.shape
    h = rms_norm(x, layer["attn_norm"], cfg.rms_eps)
    q = _proj(h, layer, lora, "wq", scale)
    k = _proj(h, layer, lora, "wk", scale)
    v = _proj(h, layer, lora, "wv", scale)
    if cfg.qkv_bias:
        q, k, v = q + layer["bq"], k + layer["bk"], v + layer["bv"]
    q = rope(q.reshape(b, t, cfg.n_heads, cfg.head_dim), positions, cfg)
    k = rope(k.reshape(b, t, cfg.n_kv_heads, cfg.head_dim), positions, cfg)
    return q, k, v.reshape(b, t, cfg.n_kv_heads, cfg.head_dim)


def _block_out(x: jax.Array, attn: jax.Array, layer: Params, lora: Params, cfg: ModelConfig, scale: float) -> jax.Array:
    b, t = attn.shape[:2]
    x = x + _proj(attn.reshape(b, t, cfg.q_dim), layer, lora, "wo", scale)
    h = rms_norm(x, layer["ffn_norm"], cfg.rms_eps)
    gate = _proj(h, layer, lora, "w_gate", scale)
    up = _proj(h, layer, lora, "w_up", scale)
    # The scan carry keeps its dtype: a bfloat16 stream stays bfloat16 whatever a bias promoted.
    return (x + _proj(jax.nn.silu(gate) * up, layer, lora, "w_down", scale)).astype(x.dtype)


def _causal_layers(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    lora: Params | None,
    lora_scale: float,
    remat: bool,
    attention: str,
    keep_kv: bool,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """The layer scan of a causal pass from position 0; optionally returns every layer's k and v."""
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))

    def block(x: jax.Array, xs: tuple[Params, Params]) -> tuple[jax.Array, Any]:
        layer, ad = xs
        q, k, v = _block_qkv(x, layer, ad, positions, cfg, lora_scale)
        out = _block_out(x, attend(q, k, v, causal=True, implementation=attention), layer, ad, cfg, lora_scale)
        return out, ((k, v) if keep_kv else None)

    body = jax.checkpoint(block) if remat else block
    x = params["embed"][tokens]
    x, kv = jax.lax.scan(body, x, (params["layers"], lora or {}))
    return rms_norm(x, params["norm"], cfg.rms_eps), kv


def hidden_states(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    remat: bool = False,
    attention: str = "auto",
) -> jax.Array:
    """Final-normed hidden states (B, T, D) of a causal forward pass over `tokens` (B, T).

    Right padding needs no mask: under a causal mask no real position attends to a later pad.
    `remat=True` recomputes each block's activations in the backward pass (gradient checkpointing),
    so training memory grows with one block, not thirty. The computation runs in the dtype of the
    parameters (see `cast_params`); `attention` picks the attention kernel (see `attention.py`).
    """
    h, _ = _causal_layers(
        params, cfg, tokens, lora=lora, lora_scale=lora_scale, remat=remat, attention=attention, keep_kv=False
    )
    return h


def lm_head(params: Params, h: jax.Array) -> jax.Array:
    """Logits (..., V) of hidden states (..., D), accumulated and returned in at least float32.

    Tied embeddings unless the file has `output.weight`.
    """
    wide = jnp.promote_types(h.dtype, jnp.float32)
    w = params.get("lm_head")
    if w is None:
        return jnp.einsum("...d,vd->...v", h, params["embed"], preferred_element_type=wide)
    return jnp.einsum("...d,dv->...v", h, w, preferred_element_type=wide)


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    attention: str = "auto",
) -> jax.Array:
    """Next-token logits (B, T, V) at every position."""
    h = hidden_states(params, cfg, tokens, lora=lora, lora_scale=lora_scale, attention=attention)
    return lm_head(params, h)


class KVCache(NamedTuple):
    """Keys and values of every layer, (L, B, S, Hkv, hd), filled up to the decoded position."""

    k: jax.Array
    v: jax.Array


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache:
    """An empty cache for `batch` sequences of up to `max_len` tokens."""
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def prefill(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    cache_len: int,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    attention: str = "auto",
) -> tuple[jax.Array, KVCache]:
    """A causal pass over right-padded prompts (B, T) that also fills a fresh cache of `cache_len`.

    Returns the final-normed hidden states (B, T, D) and the cache, in the parameters' dtype.
    Attention runs over the prompt itself (the fused causal kernel where it applies); the slots of
    a row's padding hold junk that decoding overwrites before any query can see it.
    """
    h, kv = _causal_layers(
        params, cfg, tokens, lora=lora, lora_scale=lora_scale, remat=False, attention=attention, keep_kv=True
    )
    assert kv is not None
    pad = ((0, 0), (0, 0), (0, cache_len - tokens.shape[1]), (0, 0), (0, 0))
    return h, KVCache(jnp.pad(kv[0], pad), jnp.pad(kv[1], pad))


def _write(cache: jax.Array, layer: jax.Array, new: jax.Array, positions: jax.Array, start: jax.Array) -> jax.Array:
    """Write `new` (B, T, Hkv, hd) into layer `layer` of `cache` (L, B, S, Hkv, hd) in place."""
    new = new.astype(cache.dtype)
    if start.ndim == 0:
        return jax.lax.dynamic_update_slice(cache, new[None], (layer, 0, start, 0, 0))
    rows = jnp.arange(new.shape[0])[:, None]
    return cache.at[layer, rows, positions].set(new)


def forward_cached(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    cache: KVCache,
    start: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    attention: str = "auto",
) -> tuple[jax.Array, KVCache]:
    """Run `tokens` (B, T) at positions start..start+T-1 against the cache; returns logits and the cache.

    `start` is a scalar (every row at the same position) or a (B,) array (each row at its own
    position, as when prompts of different lengths decode together). The cache is carried through
    the layer scan and written one token block at a time, so a compiled decode loop updates it in
    place. Cache slots past a row's position may hold stale values (e.g. prefill padding); the mask
    over absolute positions hides them until they are overwritten.
    """
    b, t = tokens.shape
    s = cache.k.shape[2]
    start = jnp.asarray(start, jnp.int32)
    positions = (start if start.ndim == 0 else start[:, None]) + jnp.arange(t, dtype=jnp.int32)
    positions = jnp.broadcast_to(positions, (b, t))
    mask = jnp.arange(s)[None, None, :] <= positions[:, :, None]  # (B, T, S)

    def block(carry: tuple[jax.Array, jax.Array, jax.Array], xs: tuple[Params, Params, jax.Array]) -> Any:
        x, ck, cv = carry
        layer, ad, i = xs
        q, k, v = _block_qkv(x, layer, ad, positions, cfg, lora_scale)
        ck, cv = _write(ck, i, k, positions, start), _write(cv, i, v, positions, start)
        attn = attend(q, ck[i], cv[i], mask=mask, implementation=attention)
        return (_block_out(x, attn, layer, ad, cfg, lora_scale), ck, cv), None

    x = params["embed"][tokens]
    xs = (params["layers"], lora or {}, jnp.arange(cfg.n_layers))
    (x, ks, vs), _ = jax.lax.scan(block, (x, cache.k, cache.v), xs)
    h = rms_norm(x, params["norm"], cfg.rms_eps)
    return lm_head(params, h), KVCache(ks, vs)
