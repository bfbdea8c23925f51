"""POQD's trained generator: the reader's model as a jax backbone with a LoRA adapter.

`answer_logprobs` gives log P_Θ(a | Q, D) — the summed log-probabilities of the gold answer's
tokens (and the end of the turn) after the reader's chat prompt for Q and the one passage D — and
`train_step` takes one AdamW step on POQD's loss over a minibatch of questions,

    mean_Q −log Σ_{D ∈ D_K(Q)} exp(log P_Θ(a | Q, D) + log P(D | Q)),

with gradients accumulated over micro-batches of questions (`lax.scan`) so that peak memory is
one micro-batch's. The training state (adapter and optimizer moments) is saved and loaded exactly
(`save_state`/`load_state`, `.npz` without pickle), so a resumed job continues bit for bit.

jax is imported here only: the rest of flowc.optimizers.poqd imports this module when it trains.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowc.backbone import Backbone, Example, LoraConfig, LoraTrainer, make_batch
from flowc.backbone.objectives import token_logprobs
from flowc.errors import FlowcError

#: sequences per scoring call (a fixed shape, so jit compiles once per length bucket)
SCORE_BATCH = 8
#: sequence lengths are rounded up to a multiple of this, completions to a multiple of 16
LENGTH_BUCKET = 64
#: log P(D | Q) of a padding slot (a question with fewer than K passages): exp() of it is 0
ABSENT = -1e9


class Generator:
    """A LoRA adapter on a frozen backbone, scored and trained on POQD's loss."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        targets: Sequence[str] = ("q", "v"),
        learning_rate: float = 1e-3,
        seed: int = 0,
        max_tokens: int = 512,
        micro_batch: int = 1,
    ) -> None:
        """A fresh adapter (zero update: the base model) and AdamW state.

        Args:
            backbone: the reader's base model.
            rank, alpha, targets: the LoRA configuration.
            learning_rate: AdamW's (gradient norm clipped at 1), LoraTrainer's default optimizer.
            seed: initializes the adapter's `a` matrices.
            max_tokens: the longest sequence (prompt and answer); longer prompts lose their middle.
            micro_batch: questions per gradient micro-batch.
        """
        self.backbone = backbone
        self.trainer = LoraTrainer.create(
            backbone, LoraConfig(rank=rank, alpha=alpha, targets=tuple(targets)), learning_rate=learning_rate, seed=seed
        )
        self.max_tokens = max_tokens
        self.micro_batch = micro_batch
        self.pad_id = backbone.end_of_turn_id
        self._step = jax.jit(
            partial(_train_step, self.trainer.optimizer, backbone.config, self.trainer.lora_cfg.scale),
            static_argnames=("k",),
        )

    @property
    def steps(self) -> int:
        return self.trainer.steps

    def example(self, messages: Sequence[dict[str, str]], completion: str) -> Example:
        """The tokens of a chat prompt and the answer (ended by the end-of-turn token).

        A prompt longer than `max_tokens` allows loses its middle (the passage's end), keeping its
        start and the question with the assistant header at its end.
        """
        tok = self.backbone.tokenizer
        prompt = tok.encode(tok.render_chat(list(messages), add_generation_prompt=True))
        answer = [*tok.encode(completion, parse_special=False), self.pad_id]
        room = self.max_tokens - len(answer)
        if room < 16:
            raise FlowcError(
                "invalid-value",
                f"an answer of {len(answer)} tokens leaves no room for the prompt in {self.max_tokens} tokens",
                hint="raise max_tokens (--set max_tokens=N)",
            )
        if len(prompt) > room:
            prompt = prompt[: room // 2] + prompt[len(prompt) - (room - room // 2) :]
        return Example(tuple(prompt), tuple(answer))

    # -- scoring -----------------------------------------------------------------------------------

    def answer_logprobs(self, examples: Sequence[Example]) -> np.ndarray:
        """log P(completion | prompt) of each example under the current adapter, shape (n,)."""
        out = np.zeros(len(examples), dtype=np.float64)
        for start in range(0, len(examples), SCORE_BATCH):
            chunk = list(examples[start : start + SCORE_BATCH])
            n = len(chunk)
            chunk += [chunk[0]] * (SCORE_BATCH - n)  # one batch shape
            batch = self._batch(chunk)
            lp = self.trainer.logprobs(batch)  # (B, C), zero at padding
            out[start : start + n] = lp.sum(axis=1)[:n]
        return out

    # -- training ----------------------------------------------------------------------------------

    def train_step(self, groups: Sequence[Sequence[Example]], priors: Sequence[Sequence[float]], k: int) -> float:
        """One optimizer step on POQD's loss; returns the minibatch's loss before the update.

        Args:
            groups: per question, its (prompt with one passage, answer) examples, at most `k`.
            priors: per question, log P(D | Q) of those passages (same order).
            k: the number of passages per question (questions with fewer are padded).
        """
        if not groups:
            raise FlowcError("invalid-value", "a training step needs at least one question", hint="pass questions")
        g = self.micro_batch
        n_micro = -(-len(groups) // g)
        rows: list[Example] = []
        log_prior = np.full((n_micro * g, k), ABSENT, np.float32)
        present = np.zeros((n_micro * g,), np.float32)
        for i in range(n_micro * g):
            exs = list(groups[i]) if i < len(groups) else []
            if exs:
                present[i] = 1.0
                log_prior[i, : len(exs)] = priors[i][: len(exs)]
            rows += exs[:k] + [groups[0][0]] * (k - len(exs[:k]))
        batch = self._batch(rows)
        weights = batch.weights.copy()
        for i in range(n_micro * g):  # the filler rows of absent passages and questions score nothing
            for j in range(len(groups[i]) if i < len(groups) else 0, k):
                weights[i * k + j] = 0.0

        def split(x: np.ndarray) -> jax.Array:
            return jnp.asarray(x.reshape(n_micro, -1, *x.shape[1:]))

        arrays = {
            "tokens": split(batch.tokens),
            "positions": split(batch.positions),
            "targets": split(batch.targets),
            "weights": split(weights),
            "log_prior": split(log_prior),
            "present": split(present),
        }
        t = self.trainer
        n = jnp.asarray(len(groups), jnp.float32)
        t.lora, t.opt_state, loss = self._step(t.lora, t.opt_state, self.backbone.params, arrays, n, k=k)
        t.steps += 1
        return float(loss)

    # -- files -------------------------------------------------------------------------------------

    def save_state(self, path: Path) -> Path:
        """Write the adapter, the optimizer state and the step count to `path` (`.npz`, atomic)."""
        leaves = jax.tree.leaves((self.trainer.lora, self.trainer.opt_state))
        arrays = {f"leaf{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
        arrays["steps"] = np.asarray(self.trainer.steps, np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwargs
        os.replace(tmp, path)
        return path

    def load_state(self, path: Path) -> None:
        """Restore what `save_state` wrote (same backbone and LoRA configuration)."""
        current = (self.trainer.lora, self.trainer.opt_state)
        treedef = jax.tree.structure(current)
        with np.load(path, allow_pickle=False) as data:
            n = len(jax.tree.leaves(current))
            if sorted(k for k in data.files if k.startswith("leaf")) != [f"leaf{i:04d}" for i in range(n)]:
                raise FlowcError(
                    "invalid-value",
                    f"{path} is not a training state of this generator (another LoRA configuration?)",
                    hint="resume with the settings the job started with, or start a new run directory",
                )
            leaves = [jnp.asarray(data[f"leaf{i:04d}"]) for i in range(n)]
            steps = int(data["steps"])
        self.trainer.lora, self.trainer.opt_state = jax.tree.unflatten(treedef, leaves)
        self.trainer.steps = steps

    def save_adapter(self, path: Path, extra: dict[str, Any] | None = None) -> Path:
        """The adapter as a flowc LoRA safetensors file (what the runtime serves, once published)."""
        return self.trainer.save(path, extra=extra)

    def export_adapter(self, path: Path) -> Path:
        """The adapter as a llama.cpp LoRA GGUF over the reader's base (what the runtime loads)."""
        return self.trainer.export(path, kind="adapter")

    def _batch(self, examples: Sequence[Example]) -> Any:
        longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in examples) - 1
        answers = max(len(e.completion_ids) for e in examples)
        length = -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET
        return make_batch(examples, pad_id=self.pad_id, length=length, n_targets=-(-answers // 16) * 16)


def _train_step(
    optimizer: Any,
    cfg: Any,
    scale: float,
    lora: Any,
    opt_state: Any,
    params: Any,
    arrays: dict[str, jax.Array],
    n_questions: jax.Array,
    k: int,
) -> tuple[Any, Any, jax.Array]:
    """Loss and gradient summed over micro-batches (scan), divided by the questions; one update."""

    def micro_loss(lo: Any, mb: dict[str, jax.Array]) -> jax.Array:
        lp = token_logprobs(lo, params, cfg, mb["tokens"], mb["positions"], mb["targets"], lora_scale=scale)
        seq = jnp.sum(lp * mb["weights"], axis=-1).reshape(-1, k) + mb["log_prior"]
        return -jnp.sum(jax.nn.logsumexp(seq, axis=-1) * mb["present"])

    grad_fn = jax.value_and_grad(micro_loss)

    def body(acc: Any, mb: dict[str, jax.Array]) -> tuple[Any, None]:
        loss, grads = grad_fn(lora, mb)
        return jax.tree.map(jnp.add, acc, (loss, grads)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, lora))
    (total, grads), _ = jax.lax.scan(body, zero, arrays)
    loss = total / n_questions
    grads = jax.tree.map(lambda x: x / n_questions, grads)
    updates, opt_state = optimizer.update(grads, opt_state, lora)
    return jax.tree.map(jnp.add, lora, updates), opt_state, loss
