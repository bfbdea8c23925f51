"""Decoding with a key/value cache: greedy or sampled continuations, with their log-probabilities.

The prompt is padded to a multiple of 32 and the cache to a multiple of 64, so a handful of shapes
are compiled, not one per prompt. The `n` samples share one prompt (the group of a GRPO-style
policy update); different prompts are separate calls.

This loop returns to Python for every token (one dispatch per token, the cache donated to each
step). It is the step-by-step reference; `decode.py` compiles the whole loop over a batch of
different prompts and is what rollouts use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowc.backbone.config import ModelConfig
from flowc.backbone.model import forward_cached, init_cache
from flowc.errors import FlowcError

Params = dict[str, Any]


@dataclass(frozen=True)
class Sample:
    """A generated continuation: its token ids (the stop token excluded), the model's log-probability
    of each at temperature 1 (what a policy-gradient step calls the old log-probs), and why it ended."""

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # "stop" or "length"


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@partial(jax.jit, static_argnames=("cfg", "lora_scale"), donate_argnames=("cache",))
def _prefill(
    params: Params,
    lora: Params,
    tokens: jax.Array,
    cache: Any,
    last: jax.Array,
    *,
    cfg: ModelConfig,
    lora_scale: float,
) -> tuple[jax.Array, Any]:
    logits, cache = forward_cached(params, cfg, tokens, cache, jnp.int32(0), lora=lora, lora_scale=lora_scale)
    return logits[:, last], cache


@partial(jax.jit, static_argnames=("cfg", "lora_scale"), donate_argnames=("cache",))
def _decode(
    params: Params,
    lora: Params,
    token: jax.Array,
    cache: Any,
    pos: jax.Array,
    *,
    cfg: ModelConfig,
    lora_scale: float,
) -> tuple[jax.Array, Any]:
    logits, cache = forward_cached(params, cfg, token[:, None], cache, pos, lora=lora, lora_scale=lora_scale)
    return logits[:, 0], cache


@partial(jax.jit, static_argnames=("temperature",))
def _choose(logits: jax.Array, key: jax.Array, *, temperature: float) -> tuple[jax.Array, jax.Array]:
    logp = jax.nn.log_softmax(logits, axis=-1)
    if temperature <= 0.0:
        tok = jnp.argmax(logits, axis=-1)
    else:
        tok = jax.random.categorical(key, logits / temperature, axis=-1)
    return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def generate(
    params: Params,
    cfg: ModelConfig,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    temperature: float = 0.0,
    n: int = 1,
    seed: int = 0,
    lora: Params | None = None,
    lora_scale: float = 1.0,
) -> list[Sample]:
    """Continue `prompt_ids` `n` times.

    Args:
        params, cfg: the base model.
        prompt_ids: the prompt's tokens (at least one).
        max_new_tokens: the most tokens to generate per sample.
        stop_ids: tokens that end a sample (not included in it), e.g. the end-of-turn token.
        temperature: 0 for greedy decoding, else softmax sampling at this temperature.
        n: how many samples of the same prompt to decode together.
        seed: the sampling seed (same seed, same samples).
        lora, lora_scale: an adapter to decode with (unmerged).
    """
    if not prompt_ids:
        raise FlowcError("invalid-value", "cannot generate from an empty prompt", hint="pass at least one token")
    length = len(prompt_ids)
    total = _round_up(length + max_new_tokens, 64)
    if total > cfg.context_length:
        raise FlowcError(
            "invalid-value",
            f"prompt ({length}) + max_new_tokens ({max_new_tokens}) exceeds the context ({cfg.context_length})",
            hint="shorten the prompt or lower max_new_tokens",
        )
    padded = np.zeros((n, min(_round_up(length, 32), total)), np.int32)
    padded[:, :length] = np.asarray(prompt_ids, np.int32)
    cache = init_cache(cfg, n, total, params["embed"].dtype)
    ad = lora or {}
    logits, cache = _prefill(
        params, ad, jnp.asarray(padded), cache, jnp.int32(length - 1), cfg=cfg, lora_scale=lora_scale
    )
    key = jax.random.PRNGKey(seed)
    ids: list[list[int]] = [[] for _ in range(n)]
    lps: list[list[float]] = [[] for _ in range(n)]
    done = [False] * n
    stops = {int(s) for s in stop_ids}
    for step in range(max_new_tokens):
        key, sub = jax.random.split(key)
        tok, lp = _choose(logits, sub, temperature=float(temperature))
        tok_np, lp_np = np.asarray(tok), np.asarray(lp)
        for i in range(n):
            if done[i]:
                continue
            t = int(tok_np[i])
            if t in stops:
                done[i] = True
                continue
            ids[i].append(t)
            lps[i].append(float(lp_np[i]))
        if all(done) or step == max_new_tokens - 1:
            break
        logits, cache = _decode(params, ad, tok, cache, jnp.int32(length + step), cfg=cfg, lora_scale=lora_scale)
    return [Sample(tuple(i), tuple(lp), "stop" if d else "length") for i, lp, d in zip(ids, lps, done)]
