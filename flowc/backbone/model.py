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


def _proj(x: jax.Array, layer: Params, lora: Params, name: str, scale: float) -> jax.Array:
    y = x @ layer[name]
    ad = lora.get(name)
    if ad is not None:
        # The low-rank path is added, never merged, while training: the base weight stays frozen.
        y = y + scale * ((x @ ad["a"]) @ ad["b"])
    return y


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Grouped-query attention. q (B,T,Hq,hd); k, v (B,S,Hkv,hd); mask (B,T,S) true where allowed."""
    b, t, _, hd = q.shape
    g = cfg.n_heads // cfg.n_kv_heads
    # Query head h reads kv head h // g, as llama.cpp's broadcasting (and HF's repeat_kv) does.
    qg = q.reshape(b, t, cfg.n_kv_heads, g, hd)
    scores = _wide(jnp.einsum("btkgd,bskd->bkgts", qg, k)) / np.sqrt(hd)
    scores = jnp.where(mask[:, None, None, :, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, cfg.q_dim)


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
    x = x + _proj(attn, layer, lora, "wo", scale)
    h = rms_norm(x, layer["ffn_norm"], cfg.rms_eps)
    gate = _proj(h, layer, lora, "w_gate", scale)
    up = _proj(h, layer, lora, "w_up", scale)
    return x + _proj(jax.nn.silu(gate) * up, layer, lora, "w_down", scale)


def hidden_states(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    remat: bool = False,
) -> jax.Array:
    """Final-normed hidden states (B, T, D) of a causal forward pass over `tokens` (B, T).

    Right padding needs no mask: under a causal mask no real position attends to a later pad.
    `remat=True` recomputes each block's activations in the backward pass (gradient checkpointing),
    so training memory grows with one block, not thirty.
    """
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), dtype=bool)), (b, t, t))

    def block(x: jax.Array, xs: tuple[Params, Params]) -> tuple[jax.Array, None]:
        layer, ad = xs
        q, k, v = _block_qkv(x, layer, ad, positions, cfg, lora_scale)
        return _block_out(x, _attention(q, k, v, mask, cfg), layer, ad, cfg, lora_scale), None

    body = jax.checkpoint(block) if remat else block
    x = params["embed"][tokens]
    x, _ = jax.lax.scan(body, x, (params["layers"], lora or {}))
    return rms_norm(x, params["norm"], cfg.rms_eps)


def lm_head(params: Params, h: jax.Array) -> jax.Array:
    """Logits (..., V) of hidden states (..., D); tied embeddings unless the file has `output.weight`."""
    w = params.get("lm_head")
    if w is None:
        return _wide(h @ params["embed"].T)
    return _wide(h @ w)


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
) -> jax.Array:
    """Next-token logits (B, T, V) at every position."""
    return lm_head(params, hidden_states(params, cfg, tokens, lora=lora, lora_scale=lora_scale))


class KVCache(NamedTuple):
    """Keys and values of every layer, (L, B, S, Hkv, hd), filled up to the decoded position."""

    k: jax.Array
    v: jax.Array


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache:
    """An empty cache for `batch` sequences of up to `max_len` tokens."""
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def forward_cached(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    cache: KVCache,
    start: jax.Array,
    *,
    lora: Params | None = None,
    lora_scale: float = 1.0,
) -> tuple[jax.Array, KVCache]:
    """Run `tokens` (B, T) at positions start..start+T-1 against the cache; returns logits and the cache.

    Cache slots past the current position may hold stale values (e.g. prefill padding); the causal
    mask over absolute positions hides them until they are overwritten.
    """
    b, t = tokens.shape
    s = cache.k.shape[2]
    positions = jnp.broadcast_to(start + jnp.arange(t), (b, t))
    mask = jnp.broadcast_to(jnp.arange(s)[None, :] <= positions[0][:, None], (b, t, s))

    def block(
        x: jax.Array, xs: tuple[Params, Params, jax.Array, jax.Array]
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        layer, ad, ck, cv = xs
        q, k, v = _block_qkv(x, layer, ad, positions, cfg, lora_scale)
        ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, start, 0, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, start, 0, 0))
        return _block_out(x, _attention(q, ck, cv, mask, cfg), layer, ad, cfg, lora_scale), (ck, cv)

    x = params["embed"][tokens]
    x, (ks, vs) = jax.lax.scan(block, x, (params["layers"], lora or {}, cache.k, cache.v))
    h = rms_norm(x, params["norm"], cfg.rms_eps)
    return lm_head(params, h), KVCache(ks, vs)
