"""The real embedded model (SmolLM2-135M-Instruct): jax against llama.cpp, a fine-tune, an export.

Tolerances, over the 20 most likely next tokens (log-probabilities, nats):
- against an unquantized export of the same weights, served with llama.cpp's float16 KV cache and
  flash attention off: 2e-3 (measured 1-2e-4); greedy continuations agree byte for byte;
- against the shipped Q4_1 file as llama.cpp serves it by default: 0.6 (measured 0.19-0.41), and
  the same most likely token. The gap is llama.cpp's, not the model's: its CPU kernels round the
  activations to 8 bits before every quantized matrix product, while jax multiplies the exact
  dequantized weights in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("xllamacpp")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tagged_task as task  # noqa: E402
from llama_oracle import LlamaOracle  # noqa: E402

from flowc.backbone.batching import chat_example, make_batch  # noqa: E402
from flowc.backbone.export import write_gguf  # noqa: E402
from flowc.backbone.lora import LoraConfig  # noqa: E402
from flowc.backbone.model import forward  # noqa: E402
from flowc.backbone.train import LoraTrainer  # noqa: E402

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n",
]


def _next_logprobs(bb: Any) -> Any:
    return jax.jit(lambda p, t: jax.nn.log_softmax(forward(p, bb.config, t)[0, -1]))


def _greedy_bytes(bb: Any, ids: list[int], n: int, **kw: Any) -> bytes:
    out = bb.generate(ids, max_new_tokens=n, **kw)[0].ids
    return b"".join(bb.tokenizer.token_bytes(t) for t in out)


def test_logits_and_greedy_match_llama_cpp_on_unquantized_weights(backbone: Any, tmp_path: Path) -> None:
    path = write_gguf(backbone.file, tmp_path / "smollm2-f32.gguf", all_dtype="f32")
    oracle = LlamaOracle(path, exact=True)
    fwd = _next_logprobs(backbone)
    try:
        for text in PROMPTS:
            ids = backbone.tokenizer.encode(text)
            ref = oracle.top_logprobs(ids, 20)
            mine = np.asarray(fwd(backbone.params, jnp.asarray([ids])))
            assert max(abs(float(mine[t]) - lp) for t, lp in ref.items()) < 2e-3
            assert _greedy_bytes(backbone, ids, 16) == oracle.greedy_bytes(ids, 16)
    finally:
        oracle.close()


def test_logits_close_to_the_shipped_quantized_file(backbone: Any, oracle_q4: Any) -> None:
    fwd = _next_logprobs(backbone)
    for text in PROMPTS:
        ids = backbone.tokenizer.encode(text)
        ref = oracle_q4.top_logprobs(ids, 20)
        mine = np.asarray(fwd(backbone.params, jnp.asarray([ids])))
        assert max(abs(float(mine[t]) - lp) for t, lp in ref.items()) < 0.6
        assert int(np.argmax(mine)) == max(ref, key=lambda t: ref[t])


@pytest.fixture(scope="module")
def finetuned(backbone: Any) -> dict[str, Any]:
    """A rank-8 q/v adapter after 8 SFT steps (batch 4) on the tagged-answer task."""
    tok = backbone.tokenizer
    train = [chat_example(tok, task.messages(r), task.target(r)) for r in task.load("train")]
    held = [chat_example(tok, task.messages(r), task.target(r)) for r in task.load("test")[:8]]
    trainer = LoraTrainer.create(backbone, LoraConfig(rank=8, alpha=16.0, targets=("q", "v")), learning_rate=3e-3)
    held_batch = make_batch(held, pad_id=tok.eos_id or 0, length=112, n_targets=16)
    before = trainer.loss(held_batch)
    rng = np.random.RandomState(0)
    losses = []
    for _ in range(8):
        idx = rng.choice(len(train), 4, replace=False)
        batch = make_batch([train[i] for i in idx], pad_id=tok.eos_id or 0, length=112, n_targets=16)
        losses.append(trainer.sft_step(batch))
    return {"trainer": trainer, "before": before, "after": trainer.loss(held_batch), "losses": losses}


def test_lora_fine_tune_lowers_held_out_loss(finetuned: dict[str, Any]) -> None:
    assert finetuned["after"] < 0.5 * finetuned["before"]
    assert np.mean(finetuned["losses"][-3:]) < 0.5 * finetuned["losses"][0]


def test_exported_fine_tune_reproduces_jax_exactly_when_unquantized(finetuned: dict[str, Any], tmp_path: Path) -> None:
    trainer = finetuned["trainer"]
    bb = trainer.backbone
    merged = trainer.export(tmp_path / "tagged-f32.gguf", untouched="f32")
    oracle = LlamaOracle(merged, exact=True)
    try:
        for row in task.load("test")[:3]:
            ids = bb.chat_prompt_ids(task.messages(row))
            ours = _greedy_bytes(bb, ids, 16, lora=trainer.lora, lora_cfg=trainer.lora_cfg)
            assert oracle.chat(task.messages(row), max_tokens=16) == ours.decode("utf-8")
    finally:
        oracle.close()


def test_default_export_is_served_with_the_trained_behaviour(
    finetuned: dict[str, Any], oracle_q4: Any, tmp_path: Path
) -> None:
    """The compact export (quantized base, F16 merged q/v) as the runtime serves it: the tagged
    format the base model never produces, and mostly the same replies as jax (llama.cpp's 8-bit
    activations may flip a token where the model hesitates)."""
    trainer = finetuned["trainer"]
    bb = trainer.backbone
    merged = trainer.export(tmp_path / "tagged.gguf")
    assert merged.stat().st_size < 1.2 * bb.file.path.stat().st_size
    oracle = LlamaOracle(merged)
    rows = task.load("test")[:4]
    try:
        served = [oracle.chat(task.messages(r), max_tokens=16) for r in rows]
    finally:
        oracle.close()
    base = [oracle_q4.chat(task.messages(r), max_tokens=16) for r in rows]
    ours = [
        _greedy_bytes(bb, bb.chat_prompt_ids(task.messages(r)), 16, lora=trainer.lora, lora_cfg=trainer.lora_cfg)
        for r in rows
    ]
    assert all(task.score(s, r["answer"])[0] for s, r in zip(served, rows))
    assert not any(task.score(s, r["answer"])[0] for s, r in zip(base, rows))
    assert sum(s == o.decode("utf-8") for s, o in zip(served, ours)) >= len(rows) - 1
