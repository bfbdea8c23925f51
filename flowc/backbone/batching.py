"""Turning chat examples into fixed-shape token batches (no jax: plain numpy).

A batch scores only the completion tokens. Rather than a (B, T) loss mask, it lists the positions
whose next token is a target, (B, C) with C the longest completion: the model then applies its
49k-wide output head to those C positions only, which is most of a training step's saving on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flowc.backbone.tokenizer import Tokenizer
from flowc.errors import FlowcError


@dataclass(frozen=True)
class Example:
    """One tokenized (prompt, completion) pair; the completion tokens are the targets."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded inputs and the targets to score.

    `tokens` (B, T) int32; `positions` (B, C) int32: the index in `tokens` whose output predicts
    `targets` (B, C) int32; `weights` (B, C) float32: 1 for a real target, 0 for padding.
    """

    tokens: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    weights: np.ndarray

    @property
    def size(self) -> int:
        """Number of sequences."""
        return int(self.tokens.shape[0])


def chat_example(
    tok: Tokenizer, messages: Sequence[dict[str, str]], completion: str, *, end_token: int | None = None
) -> Example:
    """Encode a chat prompt (rendered with the model's own template, as the server renders it) and
    the assistant's completion, ended by the end-of-turn token so the model learns to stop."""
    prompt = tok.render_chat(messages, add_generation_prompt=True)
    end = tok.eos_id if end_token is None else end_token
    completion_ids = tok.encode(completion, parse_special=False) + ([end] if end is not None else [])
    return Example(tuple(tok.encode(prompt)), tuple(completion_ids))


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def make_batch(
    examples: Sequence[Example],
    *,
    pad_id: int,
    length: int | None = None,
    n_targets: int | None = None,
    multiple: int = 16,
) -> TokenBatch:
    """Pad examples into one batch. Lengths are rounded up to `multiple` so jit sees few shapes.

    Args:
        examples: the pairs to batch (at least one).
        pad_id: the token written into padding (never scored).
        length: the padded sequence length T; default: the longest example, rounded up.
        n_targets: the padded target count C; default: the longest completion, rounded up to 8.
        multiple: rounding for the default T.
    """
    if not examples:
        raise FlowcError("invalid-value", "cannot batch zero examples", hint="pass at least one example")
    longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in examples)
    # The last completion token is a target but never an input, hence the -1.
    t = length if length is not None else _round_up(longest - 1, multiple)
    c = n_targets if n_targets is not None else _round_up(max(len(e.completion_ids) for e in examples), 8)
    if longest - 1 > t or max(len(e.completion_ids) for e in examples) > c:
        raise FlowcError(
            "invalid-value",
            f"an example of {longest} tokens does not fit length={t}, n_targets={c}",
            hint="raise the batch length or truncate the prompt",
        )
    b = len(examples)
    tokens = np.full((b, t), pad_id, np.int32)
    positions = np.zeros((b, c), np.int32)
    targets = np.full((b, c), pad_id, np.int32)
    weights = np.zeros((b, c), np.float32)
    for i, e in enumerate(examples):
        seq = [*e.prompt_ids, *e.completion_ids][:-1]
        tokens[i, : len(seq)] = seq
        n = len(e.completion_ids)
        start = len(e.prompt_ids) - 1
        positions[i, :n] = np.arange(start, start + n)
        targets[i, :n] = e.completion_ids
        weights[i, :n] = 1.0
    return TokenBatch(tokens, positions, targets, weights)
