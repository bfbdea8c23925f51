"""Tiny random-weight configurations shared by the fast backbone tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from flowc.backbone.config import ModelConfig
from flowc.backbone.lora import LoraConfig, init_lora
from flowc.backbone.model import init_params

TINY = ModelConfig(
    arch="llama", vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, head_dim=8,
    rope_theta=10000.0, rms_eps=1e-5, context_length=128,
)  # fmt: skip
TINY_QWEN = dataclasses.replace(TINY, arch="qwen2", rope_style="neox", tied_embeddings=False, qkv_bias=True)
LORA = LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))


def tiny_params(cfg: ModelConfig, seed: int = 0, scale: float = 0.2) -> Any:
    """Random weights, large enough that next-token distributions are far from uniform."""
    return init_params(jax.random.PRNGKey(seed), cfg, scale=scale)


def tiny_lora(cfg: ModelConfig, seed: int = 1, lora_cfg: LoraConfig = LORA) -> Any:
    """An adapter with non-zero `b`, so that it changes the model and gradients reach both factors."""
    lora = init_lora(jax.random.PRNGKey(seed), lora_cfg, cfg)
    return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape), lora)
