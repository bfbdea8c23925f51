"""Training objectives over a `TokenBatch`: supervised fine-tuning and a clipped policy gradient.

Both are pure functions of the adapter (the argument differentiated), the frozen base parameters
and a batch, so they compose with `jax.grad`, `jax.jit` and `jax.test_util.check_grads`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flowc.backbone.config import ModelConfig
from flowc.backbone.model import hidden_states, lm_head

Params = dict[str, Any]


def token_logprobs(
    lora: Params | None,
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    targets: jax.Array,
    *,
    lora_scale: float = 1.0,
    remat: bool = False,
    attention: str = "auto",
) -> jax.Array:
    """log p(targets[b, c] | tokens[b, : positions[b, c] + 1]), shape (B, C), in at least float32.

    The output head runs only at the C scored positions of each sequence. The forward pass runs in
    the parameters' dtype (bfloat16 base weights give a bfloat16 pass); logits are float32.
    """
    h = hidden_states(params, cfg, tokens, lora=lora, lora_scale=lora_scale, remat=remat, attention=attention)
    h = jnp.take_along_axis(h, positions[:, :, None], axis=1)  # (B, C, D)
    logits = lm_head(params, h)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[:, :, None], axis=-1)[..., 0]
    return picked - logz


def sft_loss(
    lora: Params,
    params: Params,
    cfg: ModelConfig,
    batch: dict[str, jax.Array],
    *,
    lora_scale: float = 1.0,
    remat: bool = False,
    attention: str = "auto",
) -> jax.Array:
    """Mean negative log-likelihood of the completion tokens (padding weighted out)."""
    lp = token_logprobs(
        lora,
        params,
        cfg,
        batch["tokens"],
        batch["positions"],
        batch["targets"],
        lora_scale=lora_scale,
        remat=remat,
        attention=attention,
    )
    w = batch["weights"]
    return -jnp.sum(lp * w) / jnp.maximum(jnp.sum(w), 1.0)


def policy_loss(
    lora: Params,
    params: Params,
    cfg: ModelConfig,
    batch: dict[str, jax.Array],
    *,
    lora_scale: float = 1.0,
    clip_eps: float = 0.2,
    kl_coef: float = 0.05,
    remat: bool = False,
    attention: str = "auto",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped policy-gradient loss with a KL penalty to the frozen base (PPO/GRPO style).

    `batch` holds the `TokenBatch` arrays of sampled completions plus `advantages` (B,), the
    `old_logprobs` (B, C) of the policy that sampled them and `ref_logprobs` (B, C) of the base
    model (adapter off). Per token: `-min(r A, clip(r, 1-eps, 1+eps) A) + kl_coef * KL`, with
    `r = exp(logp - old_logp)` and the non-negative estimator `KL = exp(d) - d - 1`,
    `d = ref_logp - logp`; averaged over real tokens.

    Returns:
        (loss, metrics): metrics has the mean KL, the clipped fraction and the mean ratio.
    """
    lp = token_logprobs(
        lora,
        params,
        cfg,
        batch["tokens"],
        batch["positions"],
        batch["targets"],
        lora_scale=lora_scale,
        remat=remat,
        attention=attention,
    )
    w = batch["weights"]
    n = jnp.maximum(jnp.sum(w), 1.0)
    adv = batch["advantages"][:, None]
    ratio = jnp.exp(lp - batch["old_logprobs"])
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    d = batch["ref_logprobs"] - lp
    kl = jnp.exp(d) - d - 1.0
    loss = jnp.sum((-surrogate + kl_coef * kl) * w) / n
    clipped = (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)
    metrics = {
        "kl": jnp.sum(kl * w) / n,
        "clip_frac": jnp.sum(clipped * w) / n,
        "ratio": jnp.sum(ratio * w) / n,
    }
    return loss, metrics
