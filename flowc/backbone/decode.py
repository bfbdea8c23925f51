"""A compiled decode loop over a batch of different prompts: prefill, then sample until every row stops.

`decode_batch` runs in one jit-compiled program: the prompts (right-padded, each row at its own
positions) go through one causal prefill that fills the KV cache, then a `lax.while_loop` samples a
token for every row, scores it, and runs the next one-token step, all on the device. The host
sees the prompts once and the finished rows once: no Python per token. The cache is created inside
the program, so it never leaves the device and XLA updates it in place.

What a rollout needs from each row: the generated ids (stop token excluded), the log-probability of
each under the model at temperature 1 (the policy's log-prob, what a PPO step calls the old
log-prob; `LoraTrainer.policy_batch` recomputes the same numbers with a full forward pass), and
whether it stopped or ran out of tokens. Sampling is softmax at `temperature` (0 = greedy) from a
seeded key: the same seed and inputs give the same samples.

Shapes are bucketed (prompt length to a multiple of 32, cache to a multiple of 64), so a handful of
programs are compiled, not one per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowc.backbone.config import ModelConfig
from flowc.backbone.generate import Sample
from flowc.backbone.model import forward_cached, lm_head, prefill
from flowc.errors import FlowcError

Params = dict[str, Any]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@partial(
    jax.jit,
    static_argnames=("cfg", "lora_scale", "max_new_tokens", "cache_len", "attention", "n"),
)
def _decode_program(
    params: Params,
    lora: Params,
    tokens: jax.Array,
    lengths: jax.Array,
    stop_ids: jax.Array,
    temperature: jax.Array,
    key: jax.Array,
    *,
    cfg: ModelConfig,
    lora_scale: float,
    max_new_tokens: int,
    cache_len: int,
    attention: str,
    n: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    h, cache = prefill(params, cfg, tokens, cache_len, lora=lora, lora_scale=lora_scale, attention=attention)
    logits = lm_head(params, h[jnp.arange(tokens.shape[0]), lengths - 1])  # the next token after each prompt
    if n > 1:  # each prompt was prefilled once; its n rows start from copies of its cache
        logits = jnp.repeat(logits, n, axis=0)
        cache = jax.tree.map(lambda c: jnp.repeat(c, n, axis=1), cache)
        lengths = jnp.repeat(lengths, n)
        stop_ids = jnp.repeat(stop_ids, n, axis=0) if stop_ids.shape[0] > 1 else stop_ids
    b = logits.shape[0]

    def choose(logits: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        greedy = jnp.argmax(logits, axis=-1)
        sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6), axis=-1)
        tok = jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]

    def cond(s: dict[str, Any]) -> jax.Array:
        return (s["step"] < max_new_tokens) & ~jnp.all(s["done"])

    def body(s: dict[str, Any]) -> dict[str, Any]:
        key, sub = jax.random.split(s["key"])
        tok, lp = choose(s["logits"], sub)
        stop = jnp.any(tok[:, None] == stop_ids, axis=-1)  # stop_ids (1 or B, K)
        keep = ~s["done"] & ~stop
        step = s["step"]
        ids = jax.lax.dynamic_update_slice(s["ids"], jnp.where(keep, tok, -1)[:, None], (0, step))
        lps = jax.lax.dynamic_update_slice(s["lps"], jnp.where(keep, lp, 0.0)[:, None], (0, step))
        logits, cache = forward_cached(
            params, cfg, tok[:, None], s["cache"], lengths + step, lora=lora, lora_scale=lora_scale, attention=attention
        )
        return {
            "step": step + 1,
            "key": key,
            "logits": logits[:, 0],
            "cache": cache,
            "ids": ids,
            "lps": lps,
            "count": s["count"] + keep.astype(jnp.int32),
            "done": s["done"] | stop,  # only a stop token ends a row early
        }

    state = {
        "step": jnp.int32(0),
        "key": key,
        "logits": logits,
        "cache": cache,
        "ids": jnp.full((b, max_new_tokens), -1, jnp.int32),
        "lps": jnp.zeros((b, max_new_tokens), jnp.float32),
        "count": jnp.zeros((b,), jnp.int32),
        "done": jnp.zeros((b,), bool),
    }
    out = jax.lax.while_loop(cond, body, state)
    return out["ids"], out["lps"], out["count"], out["done"]


def _stop_table(stop_ids: Sequence[int] | Sequence[Sequence[int]], rows: int) -> np.ndarray:
    """Stop tokens as a (1, K) table shared by all rows or a (B, K) one, padded with -1 (no token)."""
    per_row = any(isinstance(s, Sequence) for s in stop_ids)
    if per_row and len(stop_ids) != rows:
        raise FlowcError(
            "invalid-value",
            f"{len(stop_ids)} lists of stop tokens for {rows} prompts",
            hint="give one list per prompt, or one list for all",
        )
    sets = [sorted({int(t) for t in s}) for s in stop_ids] if per_row else [sorted({int(t) for t in stop_ids})]  # type: ignore[union-attr, arg-type]
    width = max(1, *(len(s) for s in sets))
    table = np.full((len(sets), width), -1, np.int32)
    for i, s in enumerate(sets):
        table[i, : len(s)] = s
    return table


def decode_batch(
    params: Params,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] | Sequence[Sequence[int]] = (),
    temperature: float = 0.0,
    seed: int = 0,
    n: int = 1,
    lora: Params | None = None,
    lora_scale: float = 1.0,
    attention: str = "auto",
) -> list[Sample]:
    """Continue each of `prompts` (different prompts, different lengths) in one compiled program.

    Args:
        params, cfg: the base model; decoding runs in the parameters' dtype (cast them once with
            `model.cast_params` for bfloat16) with a KV cache of that dtype.
        prompts: one list of token ids per prompt (each non-empty).
        max_new_tokens: the most tokens per row.
        stop_ids: tokens that end a row (not included in it), e.g. `tokenizer.eog_ids`, or one such
            list per prompt; each row stops on its own, and the loop ends when every row has stopped.
        temperature: 0 for greedy decoding, else softmax sampling at this temperature.
        seed: the sampling seed.
        n: samples per prompt (a GRPO group): the batch has len(prompts) * n rows, prompt i's in
            rows i*n .. i*n+n-1; each prompt is prefilled once and its cache copied to its rows.
        lora, lora_scale: an adapter to decode with (unmerged; float32 factors are cast to the
            compute dtype).
        attention: the attention implementation (see `attention.py`).

    Returns:
        One `Sample` per row: prompt 0's n samples, then prompt 1's, and so on.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise FlowcError(
            "invalid-value", "cannot decode an empty batch or an empty prompt", hint="pass at least one token per row"
        )
    if max_new_tokens < 1 or n < 1:
        raise FlowcError(
            "invalid-value",
            f"max_new_tokens={max_new_tokens}, n={n}",
            hint="ask for at least one token and one sample per prompt",
        )
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    width = _round_up(int(lengths.max()), 32)
    cache_len = _round_up(width + max_new_tokens, 64)
    if int(lengths.max()) + max_new_tokens > cfg.context_length:
        raise FlowcError(
            "invalid-value",
            f"prompt ({int(lengths.max())}) + max_new_tokens ({max_new_tokens}) exceeds the context "
            f"({cfg.context_length})",
            hint="shorten the prompt or lower max_new_tokens",
        )
    tokens = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = np.asarray(p, np.int32)
    stops = _stop_table(stop_ids, len(prompts))
    ids, lps, count, stopped = _decode_program(
        params,
        lora or {},
        jnp.asarray(tokens),
        jnp.asarray(lengths),
        jnp.asarray(stops),
        jnp.float32(temperature),
        jax.random.PRNGKey(seed),
        cfg=cfg,
        lora_scale=float(lora_scale),
        max_new_tokens=int(max_new_tokens),
        cache_len=cache_len,
        attention=attention,
        n=int(n),
    )
    ids, lps, count, stopped = (np.asarray(x) for x in (ids, lps, count, stopped))
    return [
        Sample(
            tuple(int(t) for t in ids[i, : count[i]]),
            tuple(float(x) for x in lps[i, : count[i]]),
            "stop" if stopped[i] else "length",
        )
        for i in range(len(prompts) * n)
    ]
