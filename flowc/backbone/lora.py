"""LoRA adapters: low-rank updates `W + (alpha / rank) * A @ B` on chosen projections of every layer.

An adapter is a pytree `{projection: {"a": (L, n_in, rank), "b": (L, rank, n_out)}}` with the same
stacked layer axis as the base parameters, so the model's layer scan slices both together.
`b` starts at zero: an untrained adapter leaves the model exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from flowc.backbone.config import ModelConfig
from flowc.errors import FlowcError

Params = dict[str, Any]

# Short target names (as users write them) -> the projection keys of `model.py`.
TARGETS: dict[str, str] = {
    "q": "wq",
    "k": "wk",
    "v": "wv",
    "o": "wo",
    "gate": "w_gate",
    "up": "w_up",
    "down": "w_down",
}


@dataclass(frozen=True)
class LoraConfig:
    """Which projections get an adapter, its rank, and its scale `alpha / rank`."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise FlowcError(
                "invalid-value",
                f"unknown LoRA targets {unknown}" if unknown else "LoRA needs at least one target",
                hint=f"choose targets among: {', '.join(TARGETS)}",
            )
        if self.rank < 1:
            raise FlowcError("invalid-value", f"LoRA rank {self.rank} < 1", hint="use a rank such as 8 or 16")

    @property
    def scale(self) -> float:
        """The factor applied to `A @ B`."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraConfig:
        """The inverse of `to_dict`."""
        return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), targets=tuple(d["targets"]))


def projection_shape(cfg: ModelConfig, key: str) -> tuple[int, int]:
    """(n_in, n_out) of a projection."""
    return {
        "wq": (cfg.dim, cfg.q_dim),
        "wk": (cfg.dim, cfg.kv_dim),
        "wv": (cfg.dim, cfg.kv_dim),
        "wo": (cfg.q_dim, cfg.dim),
        "w_gate": (cfg.dim, cfg.hidden_dim),
        "w_up": (cfg.dim, cfg.hidden_dim),
        "w_down": (cfg.hidden_dim, cfg.dim),
    }[key]


def init_lora(key: jax.Array, lora_cfg: LoraConfig, cfg: ModelConfig) -> Params:
    """A fresh adapter: `a` uniform in ±1/sqrt(n_in), `b` zero."""
    out: Params = {}
    for k, target in zip(jax.random.split(key, len(lora_cfg.targets)), lora_cfg.targets):
        name = TARGETS[target]
        n_in, n_out = projection_shape(cfg, name)
        bound = 1.0 / n_in**0.5
        out[name] = {
            "a": jax.random.uniform(k, (cfg.n_layers, n_in, lora_cfg.rank), minval=-bound, maxval=bound),
            "b": jnp.zeros((cfg.n_layers, lora_cfg.rank, n_out)),
        }
    return out


def lora_delta(lora: Params, name: str, scale: float) -> jax.Array:
    """The dense update (L, n_in, n_out) an adapter adds to projection `name`."""
    ad = lora[name]
    return scale * jnp.einsum("lir,lro->lio", ad["a"], ad["b"])


def merge_lora(params: Params, lora: Params, lora_cfg: LoraConfig) -> Params:
    """Base parameters with the adapter folded in (a new pytree; `params` is untouched)."""
    layers = dict(params["layers"])
    for name in lora:
        layers[name] = layers[name] + lora_delta(lora, name, lora_cfg.scale).astype(layers[name].dtype)
    return {**params, "layers": layers}
