"""`LoraTrainer`: jit-compiled optax steps on a LoRA adapter over a frozen backbone.

A step takes a batch of B sequences, splits it into `micro_batches` equal parts, accumulates their
gradients in a `lax.scan` (so peak activation memory is one micro-batch's) and applies one optax
update. `remat=True` adds gradient checkpointing per block. The base parameters are an argument of
the compiled step, never a closure constant, so they are not copied into the compiled program.

Mixed precision: with `compute_dtype="bfloat16"` the frozen base is cast to bfloat16 once and the
forward and backward passes run in bfloat16, while the adapter (the master weights), its gradients
and the optimizer state stay float32; logits and losses are float32. "auto" picks bfloat16 on an
accelerator and float32 on a CPU, where XLA's bfloat16 matmuls are slower than float32 ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowc.backbone.attention import IMPLEMENTATIONS
from flowc.backbone.backbone import Backbone
from flowc.backbone.batching import TokenBatch
from flowc.backbone.checkpoint import load_adapter, save_adapter
from flowc.backbone.decode import decode_batch
from flowc.backbone.export import TensorDType, export_lora_adapter, export_merged
from flowc.backbone.generate import Sample
from flowc.backbone.lora import LoraConfig, init_lora
from flowc.backbone.model import cast_params
from flowc.backbone.objectives import policy_loss, sft_loss, token_logprobs
from flowc.errors import FlowcError

Params = dict[str, Any]
LossFn = Callable[[Params, Params, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


@dataclass(frozen=True)
class PolicyBatch:
    """Sampled completions for a policy-gradient step: the token batch, one advantage per sequence,
    and the per-token log-probs of the sampling policy (`old`) and of the frozen base (`ref`)."""

    batch: TokenBatch
    advantages: np.ndarray
    old_logprobs: np.ndarray
    ref_logprobs: np.ndarray


COMPUTE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")


def resolve_compute_dtype(name: str) -> str:
    """The dtype ("float32" or "bfloat16") a `compute_dtype` option means; "auto" is bfloat16 off the CPU."""
    if name not in COMPUTE_DTYPES:
        raise FlowcError(
            "invalid-value",
            f"unknown compute dtype '{name}'",
            hint=f"use one of: {', '.join(COMPUTE_DTYPES)}",
        )
    if name == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return name


def _as_arrays(batch: TokenBatch) -> dict[str, jax.Array]:
    return {
        "tokens": jnp.asarray(batch.tokens),
        "positions": jnp.asarray(batch.positions),
        "targets": jnp.asarray(batch.targets),
        "weights": jnp.asarray(batch.weights),
    }


def _split(batch: dict[str, jax.Array], n: int) -> dict[str, jax.Array]:
    return {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}


def accumulated_grad(
    loss_fn: LossFn, lora: Params, params: Params, batch: dict[str, jax.Array], micro_batches: int
) -> tuple[jax.Array, dict[str, jax.Array], Params]:
    """Loss, metrics and gradient of `batch`, computed over `micro_batches` equal slices.

    The losses are means over target tokens, so each slice is weighted by its share of the
    batch's tokens: the result equals the whole batch's in one pass, whatever the padding.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if micro_batches == 1:
        (loss, aux), grads = grad_fn(lora, params, batch)
        return loss, aux, grads
    total_weight = jnp.maximum(jnp.sum(batch["weights"]), 1.0)

    def body(acc: Any, mb: dict[str, jax.Array]) -> tuple[Any, None]:
        (loss, aux), grads = grad_fn(lora, params, mb)
        share = jnp.sum(mb["weights"]) / total_weight
        return jax.tree.map(lambda a, x: a + share * x, acc, (loss, aux, grads)), None

    parts = _split(batch, micro_batches)
    first = jax.tree.map(lambda x: x[0], parts)
    shapes = jax.eval_shape(lambda: grad_fn(lora, params, first))
    (loss_s, aux_s), grads_s = shapes
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_s, aux_s, grads_s))
    total, _ = jax.lax.scan(body, zero, parts)
    return total


@dataclass
class LoraTrainer:
    """Trains one LoRA adapter on a frozen `Backbone` with optax.

    Build it with `LoraTrainer.create(backbone, LoraConfig(...), learning_rate=...)`; call
    `sft_step(batch)` or `policy_step(policy_batch)`; `save`, `load` and `export` the result.
    """

    backbone: Backbone
    lora_cfg: LoraConfig
    optimizer: optax.GradientTransformation
    lora: Params
    opt_state: Any
    micro_batches: int = 1
    remat: bool = False
    steps: int = 0
    compute_dtype: str = "float32"
    attention: str = "auto"
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)
    _base: Params | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        backbone: Backbone,
        lora_cfg: LoraConfig | None = None,
        *,
        learning_rate: float = 1e-3,
        optimizer: optax.GradientTransformation | None = None,
        seed: int = 0,
        micro_batches: int = 1,
        remat: bool = False,
        compute_dtype: str = "auto",
        attention: str = "auto",
    ) -> LoraTrainer:
        """A fresh adapter (zero update) and optimizer state.

        Args:
            backbone: the frozen base model.
            lora_cfg: rank, alpha and targets (default: rank 8, alpha 16, q and v).
            learning_rate: for the default optimizer, AdamW with gradient clipping at norm 1.
            optimizer: any optax transformation, replacing the default.
            seed: initializes the adapter's `a` matrices.
            micro_batches: gradient accumulation slices per step (the batch size must divide).
            remat: gradient checkpointing per block (less memory, ~25% slower on CPU).
            compute_dtype: "float32", "bfloat16" (base and activations; the adapter and optimizer
                state stay float32) or "auto" (bfloat16 on an accelerator, float32 on a CPU).
            attention: the attention implementation, "auto", "cudnn", "xla" or "reference".
        """
        if attention not in IMPLEMENTATIONS:
            raise FlowcError(
                "invalid-value",
                f"unknown attention implementation '{attention}'",
                hint=f"use one of: {', '.join(IMPLEMENTATIONS)}",
            )
        lora_cfg = lora_cfg or LoraConfig()
        opt = optimizer or optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=0.0))
        lora = init_lora(jax.random.PRNGKey(seed), lora_cfg, backbone.config)
        return cls(
            backbone,
            lora_cfg,
            opt,
            lora,
            opt.init(lora),
            micro_batches=micro_batches,
            remat=remat,
            compute_dtype=resolve_compute_dtype(compute_dtype),
            attention=attention,
        )

    @property
    def base_params(self) -> Params:
        """The frozen base in the compute dtype (cast once, on first use, for bfloat16)."""
        if self._base is None:
            params = self.backbone.params
            self._base = params if self.compute_dtype == "float32" else cast_params(params, jnp.bfloat16)
        return self._base

    # -- compiled functions -------------------------------------------------------------------

    def _step_fn(self, name: str, loss_fn: LossFn) -> Any:
        if name not in self._compiled:
            opt, n = self.optimizer, self.micro_batches

            def step(lora: Params, opt_state: Any, params: Params, batch: dict[str, jax.Array]) -> Any:
                loss, aux, grads = accumulated_grad(loss_fn, lora, params, batch, n)
                updates, opt_state = opt.update(grads, opt_state, lora)
                return optax.apply_updates(lora, updates), opt_state, loss, aux

            self._compiled[name] = jax.jit(step)
        return self._compiled[name]

    def _sft_loss_fn(self) -> LossFn:
        cfg, scale, remat, attention = self.backbone.config, self.lora_cfg.scale, self.remat, self.attention

        def fn(lora: Params, params: Params, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
            return sft_loss(lora, params, cfg, batch, lora_scale=scale, remat=remat, attention=attention), {}

        return fn

    def _check(self, batch: TokenBatch) -> None:
        if batch.size % self.micro_batches:
            raise FlowcError(
                "invalid-value",
                f"batch of {batch.size} does not split into {self.micro_batches} micro-batches",
                hint="make the batch size a multiple of micro_batches",
            )

    # -- training -----------------------------------------------------------------------------

    def sft_step(self, batch: TokenBatch) -> float:
        """One supervised step; returns the batch's loss before the update."""
        self._check(batch)
        step = self._step_fn("sft", self._sft_loss_fn())
        self.lora, self.opt_state, loss, _ = step(self.lora, self.opt_state, self.base_params, _as_arrays(batch))
        self.steps += 1
        return float(loss)

    def policy_step(self, pb: PolicyBatch, *, clip_eps: float = 0.2, kl_coef: float = 0.05) -> dict[str, float]:
        """One clipped policy-gradient step with a KL penalty to the base; returns loss and metrics."""
        self._check(pb.batch)
        cfg, scale = self.backbone.config, self.lora_cfg.scale
        loss_fn = partial(
            policy_loss,
            cfg=cfg,
            lora_scale=scale,
            clip_eps=clip_eps,
            kl_coef=kl_coef,
            remat=self.remat,
            attention=self.attention,
        )

        def fn(lora: Params, params: Params, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
            return loss_fn(lora, params, batch=batch)

        step = self._step_fn(f"policy-{clip_eps}-{kl_coef}", fn)
        arrays = {
            **_as_arrays(pb.batch),
            "advantages": jnp.asarray(pb.advantages, jnp.float32),
            "old_logprobs": jnp.asarray(pb.old_logprobs, jnp.float32),
            "ref_logprobs": jnp.asarray(pb.ref_logprobs, jnp.float32),
        }
        self.lora, self.opt_state, loss, aux = step(self.lora, self.opt_state, self.base_params, arrays)
        self.steps += 1
        return {"loss": float(loss), **{k: float(v) for k, v in aux.items()}}

    # -- evaluation ---------------------------------------------------------------------------

    def logprobs(self, batch: TokenBatch, *, adapter: bool = True) -> np.ndarray:
        """Per-target log-probs (B, C) with the adapter (the policy) or without it (the base)."""
        key = "logprobs-lora" if adapter else "logprobs-base"
        if key not in self._compiled:
            cfg, scale, attention = self.backbone.config, self.lora_cfg.scale, self.attention

            def fn(lora: Params | None, params: Params, b: dict[str, jax.Array]) -> jax.Array:
                return token_logprobs(
                    lora, params, cfg, b["tokens"], b["positions"], b["targets"], lora_scale=scale, attention=attention
                )

            self._compiled[key] = jax.jit(fn)
        arrays = _as_arrays(batch)
        out = self._compiled[key](self.lora if adapter else None, self.base_params, arrays)
        return np.asarray(out) * batch.weights

    def loss(self, batch: TokenBatch) -> float:
        """The supervised loss of a batch under the current adapter (no update)."""
        lp = self.logprobs(batch)
        return float(-lp.sum() / max(batch.weights.sum(), 1.0))

    def policy_batch(self, batch: TokenBatch, advantages: np.ndarray) -> PolicyBatch:
        """Wrap sampled completions with the current policy's and the base's log-probs."""
        return PolicyBatch(
            batch,
            np.asarray(advantages, np.float32),
            self.logprobs(batch),
            self.logprobs(batch, adapter=False),
        )

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        seed: int = 0,
        n: int = 1,
        stop_ids: Sequence[int] | None = None,
        adapter: bool = True,
    ) -> list[Sample]:
        """Rollouts of the current policy: one compiled decode over different prompts (see `decode.py`).

        Decodes in the compute dtype with the adapter unmerged; `n` samples per prompt (rows
        i*n .. i*n+n-1 are prompt i's, prefilled once); `stop_ids` defaults to the tokenizer's
        end-of-generation tokens. Each sample's log-probs are the policy's at
        temperature 1, the numbers `policy_batch` recomputes for the same tokens.
        """
        stops = self.backbone.tokenizer.eog_ids if stop_ids is None else stop_ids
        return decode_batch(
            self.base_params,
            self.backbone.config,
            prompts,
            max_new_tokens=max_new_tokens,
            stop_ids=stops,
            temperature=temperature,
            seed=seed,
            n=n,
            lora=self.lora if adapter else None,
            lora_scale=self.lora_cfg.scale,
            attention=self.attention,
        )

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Save the adapter (safetensors + config + base checksum)."""
        info = {"steps": self.steps, **(extra or {})}
        return save_adapter(
            path,
            self.lora,
            self.lora_cfg,
            base_sha256=self.backbone.sha256,
            model_config=self.backbone.config,
            extra=info,
        )

    def load(self, path: str | Path) -> None:
        """Replace the adapter with a saved one (trained on this same base) and reset the optimizer."""
        lora, lora_cfg, info = load_adapter(path, expected_base_sha256=self.backbone.sha256)
        self.lora = jax.tree.map(jnp.asarray, lora)
        self.lora_cfg = lora_cfg
        self.opt_state = self.optimizer.init(self.lora)
        self.steps = int(info["extra"].get("steps", 0))
        self._compiled.clear()

    def export(self, path: str | Path, *, kind: str = "merged", untouched: TensorDType | None = None) -> Path:
        """Write a GGUF for the runtime: "merged" (a standalone model) or "adapter" (llama.cpp LoRA).

        `untouched` ("f16"/"f32") stores the base's other tensors unquantized; see `export_merged`.
        """
        lora_np = jax.tree.map(np.asarray, self.lora)
        if kind == "merged":
            return export_merged(self.backbone.file, lora_np, self.lora_cfg, path, untouched=untouched)
        if kind == "adapter":
            return export_lora_adapter(self.backbone.file, lora_np, self.lora_cfg, path)
        raise FlowcError("invalid-value", f"unknown export kind '{kind}'", hint="use 'merged' or 'adapter'")
