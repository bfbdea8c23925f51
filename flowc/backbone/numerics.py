"""llama.cpp's CPU rounding, emulated: to reproduce what it serves from a quantized GGUF file.

jax computes with the exact dequantized weights in float32. llama.cpp's CPU kernels instead round
each activation before a matrix product with quantized weights: to 8-bit blocks of 32 values with
a float16 scale (Q8_0/Q8_1, for Q4_0..Q8_0 weights), to 8-bit blocks of 256 with a float32 scale
(Q8_K, for the K-quants), or to float16 (for F16 weights); and it keeps keys, values and (in flash
attention) queries in float16. `Numerics.of_file(f)` describes a file; passing it to the forward
functions applies the same roundings, which shrinks the gap to llama.cpp's logits several-fold
(see docs/backbone.md). It is for comparison and serving checks, not for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from flowc.backbone.gguf_io import GGUFModelFile

Rounding = Literal["q8", "q8k", "f16", "f32"]
_PROJ_TENSORS = {
    "wq": "attn_q",
    "wk": "attn_k",
    "wv": "attn_v",
    "wo": "attn_output",
    "w_gate": "ffn_gate",
    "w_up": "ffn_up",
    "w_down": "ffn_down",
}
_Q8_BLOCKS = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1"}
_K_QUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"}


def _rounding_of(type_name: str) -> Rounding:
    if type_name in _Q8_BLOCKS:
        return "q8"
    if type_name in _K_QUANTS:
        return "q8k"
    if type_name in ("F16", "BF16"):
        return "f16"
    return "f32"


@dataclass(frozen=True)
class Numerics:
    """How the activation entering each projection is rounded (hashable: a jit static argument)."""

    act: tuple[tuple[str, Rounding], ...]
    head: Rounding = "f32"
    kv_f16: bool = True

    @classmethod
    def of_file(cls, f: GGUFModelFile) -> Numerics:
        """The roundings llama.cpp applies when serving `f` with its default (float16) KV cache."""
        act = tuple(
            (key, _rounding_of(f.raw_tensor(f"blk.0.{name}.weight").tensor_type.name))
            for key, name in _PROJ_TENSORS.items()
        )
        head_name = "output.weight" if "output.weight" in f.tensor_names else "token_embd.weight"
        return cls(act=act, head=_rounding_of(f.raw_tensor(head_name).tensor_type.name))

    def rounding(self, key: str) -> Rounding:
        """The rounding of projection `key` ("f32" if not listed)."""
        return dict(self.act).get(key, "f32")


def _round_half_away(x: jax.Array) -> jax.Array:
    # C's roundf, which ggml's reference quantizers use (jnp.round rounds half to even).
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _blockwise_int8(x: jax.Array, block: int, f16_scale: bool) -> jax.Array:
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)
    d = jnp.max(jnp.abs(xb), axis=-1, keepdims=True) / 127.0
    q = _round_half_away(xb * jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 0.0))
    if f16_scale:
        d = d.astype(jnp.float16).astype(x.dtype)
    return (q * d).reshape(shape)


def round_activation(x: jax.Array, rounding: Rounding) -> jax.Array:
    """`x` as llama.cpp's kernel for the given weight storage sees it."""
    if rounding == "q8" and x.shape[-1] % 32 == 0:
        return _blockwise_int8(x, 32, f16_scale=True)
    if rounding == "q8k" and x.shape[-1] % 256 == 0:
        return _blockwise_int8(x, 256, f16_scale=False)
    if rounding == "f16":
        return x.astype(jnp.float16).astype(x.dtype)
    return x


def round_f16(x: jax.Array) -> jax.Array:
    """`x` rounded to float16 and back."""
    return x.astype(jnp.float16).astype(x.dtype)
