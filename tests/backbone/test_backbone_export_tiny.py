"""GGUF files written by the backbone are served by llama.cpp (xllamacpp) with the same numbers.

Tiny random models with the real 49k vocabulary keep this fast: a full-weight export of each
supported architecture, a merged-LoRA export and a llama.cpp LoRA-adapter export, each compared
with the jax model on next-token log-probs and greedy continuations. With llama.cpp's float16
KV cache and flash attention off ("exact"), the two agree to float32 rounding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("xllamacpp")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from llama_oracle import LlamaOracle  # noqa: E402
from tiny_models import LORA, TINY, TINY_QWEN, tiny_lora, tiny_params  # noqa: E402

from flowc.backbone.config import ModelConfig  # noqa: E402
from flowc.backbone.export import export_lora_adapter, export_merged, export_params  # noqa: E402
from flowc.backbone.generate import generate  # noqa: E402
from flowc.backbone.gguf_io import GGUFModelFile  # noqa: E402
from flowc.backbone.model import forward, load_params  # noqa: E402

PROMPTS = ["The capital of France is", "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"]
TOL = 1e-3  # log-prob tolerance over the top-20 tokens (measured: ~3e-5)


def _with_vocab(cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(cfg, vocab_size=49152, dim=64, hidden_dim=96, head_dim=16, context_length=256)


def _agree(oracle: LlamaOracle, params: Any, cfg: ModelConfig, *, lora: Any = None, scale: float = 1.0) -> None:
    fwd = jax.jit(lambda p, ad, t: jax.nn.log_softmax(forward(p, cfg, t, lora=ad, lora_scale=scale)[0, -1]))
    for text in PROMPTS:
        ids = oracle.tokenize(text)
        ref = oracle.top_logprobs(ids, 20)
        mine = np.asarray(fwd(params, lora, jnp.asarray([ids])))
        assert max(abs(float(mine[t]) - lp) for t, lp in ref.items()) < TOL
        ours = list(generate(params, cfg, ids, max_new_tokens=16, lora=lora, lora_scale=scale)[0].ids)
        assert_same_greedy(ours, oracle.greedy_ids(ids, 16), ids, lambda t: fwd(params, lora, jnp.asarray([t])))


def assert_same_greedy(ours: list[int], theirs: list[int], prompt: list[int], logprobs: Any) -> None:
    """Greedy continuations agree, except where the two next tokens are tied within `TOL`
    (random tiny models have near-ties; after a tie the sequences legitimately part)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            lp = np.asarray(logprobs(prompt + ours[:i]))
            assert abs(float(lp[a]) - float(lp[b])) < TOL, f"step {i}: {a} vs {b} is not a near-tie"
            return
    # Equal up to the shorter one; the longer one ended past an end-of-generation token.
    assert abs(len(ours) - len(theirs)) <= 1


@pytest.mark.parametrize("base", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_full_export_round_trips_and_matches_llama_cpp(base: ModelConfig, smollm_file: Any, tmp_path: Path) -> None:
    cfg = _with_vocab(base)
    params = tiny_params(cfg, scale=0.3)
    path = export_params(params, cfg, tmp_path / f"tiny-{cfg.arch}.gguf", tokenizer_from=smollm_file)
    f = GGUFModelFile(path)
    # GGUF stores the epsilon as float32.
    assert dataclasses.replace(f.config, rms_eps=cfg.rms_eps) == cfg
    assert f.config.rms_eps == pytest.approx(cfg.rms_eps)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(load_params(f))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    oracle = LlamaOracle(path, exact=True)
    try:
        _agree(oracle, params, cfg)
    finally:
        oracle.close()


def test_merged_and_adapter_exports_serve_the_adapted_model(smollm_file: Any, tmp_path: Path) -> None:
    cfg = _with_vocab(TINY)
    params = tiny_params(cfg, scale=0.3)
    base = GGUFModelFile(export_params(params, cfg, tmp_path / "base.gguf", tokenizer_from=smollm_file))
    lora = jax.tree.map(lambda x: np.asarray(x) * 4.0, tiny_lora(cfg))  # large enough to change the argmax
    merged = export_merged(base, lora, LORA, tmp_path / "merged.gguf", dtype="f32")
    meta = GGUFModelFile(merged).metadata
    assert meta["flowc.base.sha256"] == base.sha256
    oracle = LlamaOracle(merged, exact=True)
    try:
        _agree(oracle, params, cfg, lora=lora, scale=LORA.scale)
        # The adapter must matter, or this test would pass with an unmerged export.
        ids = oracle.tokenize(PROMPTS[0])
        plain = generate(params, cfg, ids, max_new_tokens=16)[0].ids
        assert list(plain) != oracle.greedy_ids(ids, 16)
    finally:
        oracle.close()
    adapter = export_lora_adapter(base, lora, LORA, tmp_path / "adapter.gguf")
    oracle = LlamaOracle(base.path, exact=True, lora=adapter)
    try:
        _agree(oracle, params, cfg, lora=lora, scale=LORA.scale)
    finally:
        oracle.close()
