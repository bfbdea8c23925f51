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
from flowc.backbone.tokenizer import Tokenizer  # noqa: E402

PROMPTS = ["The capital of France is", "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"]
TOL = 1e-3  # log-prob tolerance over the top-20 tokens (measured: ~3e-5)
EOG = (0, 2)  # llama.cpp ends generation at <|endoftext|> and <|im_end|> of this vocabulary


def _with_vocab(cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(cfg, vocab_size=49152, dim=64, hidden_dim=96, head_dim=16, context_length=256)


def _agree(
    oracle: LlamaOracle, params: Any, cfg: ModelConfig, tokenizer: Any, *, lora: Any = None, scale: float = 1.0
) -> None:
    fwd = jax.jit(lambda p, ad, t: jax.nn.log_softmax(forward(p, cfg, t, lora=ad, lora_scale=scale)[0, -1]))
    for text in PROMPTS:
        ids = oracle.tokenize(text)
        ref = oracle.top_logprobs(ids, 20)
        mine = np.asarray(fwd(params, lora, jnp.asarray([ids])))
        assert max(abs(float(mine[t]) - lp) for t, lp in ref.items()) < TOL
        ours = generate(params, cfg, ids, max_new_tokens=16, stop_ids=EOG, lora=lora, lora_scale=scale)[0].ids
        assert_same_greedy(
            list(ours), oracle.greedy_bytes(ids, 16), ids, lambda t: fwd(params, lora, jnp.asarray([t])), tokenizer
        )


def assert_same_greedy(ours: list[int], theirs: bytes, prompt: list[int], logprobs: Any, tokenizer: Any) -> None:
    """Greedy continuations agree byte for byte, unless jax's own choice was a near-tie (top two
    within `TOL`) at the token where they part: random tiny models have a few such ties."""
    done = b""
    for i, t in enumerate(ours):
        piece = tokenizer.token_bytes(t)
        if not theirs.startswith(done + piece):
            top2 = np.sort(np.asarray(logprobs(prompt + ours[:i])))[-2:]
            assert top2[1] - top2[0] < TOL, f"greedy outputs part at step {i} without a tie"
            return
        done += piece
    assert done == theirs


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
        _agree(oracle, params, cfg, Tokenizer.from_metadata(smollm_file.metadata))
    finally:
        oracle.close()


def test_merged_and_adapter_exports_serve_the_adapted_model(smollm_file: Any, tmp_path: Path) -> None:
    cfg = _with_vocab(TINY)
    params = tiny_params(cfg, scale=0.3)
    tok = Tokenizer.from_metadata(smollm_file.metadata)
    base = GGUFModelFile(export_params(params, cfg, tmp_path / "base.gguf", tokenizer_from=smollm_file))
    lora = jax.tree.map(lambda x: np.asarray(x) * 4.0, tiny_lora(cfg))  # large enough to change the argmax
    merged = export_merged(base, lora, LORA, tmp_path / "merged.gguf", dtype="f32")
    meta = GGUFModelFile(merged).metadata
    assert meta["flowc.base.sha256"] == base.sha256
    oracle = LlamaOracle(merged, exact=True)
    try:
        _agree(oracle, params, cfg, tok, lora=lora, scale=LORA.scale)
        # The adapter must matter, or this test would pass with an unmerged export.
        ids = oracle.tokenize(PROMPTS[0])
        plain = generate(params, cfg, ids, max_new_tokens=16, stop_ids=EOG)[0].ids
        assert b"".join(tok.token_bytes(t) for t in plain) != oracle.greedy_bytes(ids, 16)
    finally:
        oracle.close()
    adapter = export_lora_adapter(base, lora, LORA, tmp_path / "adapter.gguf")
    oracle = LlamaOracle(base.path, exact=True, lora=adapter)
    try:
        _agree(oracle, params, cfg, tok, lora=lora, scale=LORA.scale)
    finally:
        oracle.close()
