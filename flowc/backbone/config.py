"""Hyper-parameters of a Llama-family decoder, read from GGUF metadata (no jax needed here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from flowc.errors import FlowcError

RopeStyle = Literal["normal", "neox"]

# Architectures whose blocks are the same Llama shape (RMSNorm, rotary, GQA, SwiGLU). They differ in
# the rotary layout llama.cpp uses and in whether q/k/v carry biases (read from the tensors present).
SUPPORTED_ARCHS: dict[str, RopeStyle] = {"llama": "normal", "qwen2": "neox"}


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder. `rope_style` is "normal" (adjacent pairs, llama.cpp's LLAMA) or "neox"."""

    arch: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    context_length: int
    rope_style: RopeStyle = "normal"
    tied_embeddings: bool = True
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise FlowcError(
                "invalid-value",
                f"{self.n_heads} attention heads cannot be grouped over {self.n_kv_heads} kv heads",
                hint="n_heads must be a multiple of n_kv_heads",
            )
        if self.head_dim % 2:
            raise FlowcError("invalid-value", f"head_dim {self.head_dim} is odd", hint="rotary needs an even head_dim")

    @property
    def q_dim(self) -> int:
        """Width of the query projection's output."""
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key and value projections' outputs."""
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (saved beside adapters)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The inverse of `to_dict`."""
        return cls(**d)


def config_from_metadata(meta: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
    """Build a `ModelConfig` from GGUF key/values; raises `artifact-invalid` for what we cannot run."""
    arch = str(meta.get("general.architecture", ""))
    if arch not in SUPPORTED_ARCHS:
        raise FlowcError(
            "artifact-invalid",
            f"GGUF architecture '{arch}' is not supported by the jax backbone",
            hint=f"use a model of the Llama family: {', '.join(SUPPORTED_ARCHS)}",
        )

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise FlowcError(
                "artifact-invalid",
                f"GGUF metadata lacks '{arch}.{name}'",
                hint="re-convert the model with llama.cpp",
            )
        return value

    dim = int(key("embedding_length"))
    n_heads = int(key("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", dim // n_heads))
    rope_dim = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise FlowcError(
            "artifact-invalid",
            f"partial rotary ({rope_dim} of {head_dim} dims) is not supported",
            hint="use a model whose rope.dimension_count equals its head size",
        )
    if meta.get(f"{arch}.rope.scaling.type") not in (None, "none"):
        raise FlowcError(
            "artifact-invalid",
            "rope scaling is not supported by the jax backbone",
            hint="use a model without it",
        )
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(meta.get("tokenizer.ggml.tokens", ()))
    return ModelConfig(
        arch=arch,
        vocab_size=int(vocab),
        dim=dim,
        n_layers=int(key("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        hidden_dim=int(key("feed_forward_length")),
        head_dim=head_dim,
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rms_eps=float(key("attention.layer_norm_rms_epsilon")),
        context_length=int(key("context_length")),
        rope_style=SUPPORTED_ARCHS[arch],
        tied_embeddings="output.weight" not in tensor_names,
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
    )
