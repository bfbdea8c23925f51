"""The accelerator paths on a CPU, on tiny random models: fused attention against the reference,
bfloat16 training against float32, and the compiled batched decode loop against step-by-step
decoding. No GPU is needed; on a CPU "auto" keeps float32 and XLA attention."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tiny_models import LORA, TINY, TINY_QWEN, tiny_lora, tiny_params  # noqa: E402

from flowc.backbone.attention import attention, choose_implementation, full_mask, reference_attention  # noqa: E402
from flowc.backbone.batching import Example, make_batch  # noqa: E402
from flowc.backbone.config import ModelConfig  # noqa: E402
from flowc.backbone.decode import decode_batch  # noqa: E402
from flowc.backbone.generate import generate  # noqa: E402
from flowc.backbone.model import cast_params, forward  # noqa: E402
from flowc.backbone.objectives import sft_loss  # noqa: E402
from flowc.backbone.train import LoraTrainer, resolve_compute_dtype  # noqa: E402
from flowc.errors import FlowcError  # noqa: E402

PROMPTS = [[5, 17, 3, 44, 9], [1, 2], list(range(1, 40)), [7], [30, 31, 32, 33, 34, 35, 36, 37, 38]]


@dataclasses.dataclass
class _TinyBackbone:
    """What `LoraTrainer` needs of a `Backbone`, over random weights."""

    config: ModelConfig
    params: Any
    sha256: str = "0" * 64


def _qkv(seed: int, b: int, t: int, s: int, hq: int, hkv: int, hd: int = 8) -> tuple[Any, Any, Any]:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (
        jax.random.normal(k1, (b, t, hq, hd)),
        jax.random.normal(k2, (b, s, hkv, hd)),
        jax.random.normal(k3, (b, s, hkv, hd)),
    )


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
def test_fused_attention_equals_reference(hq: int, hkv: int) -> None:
    q, k, v = _qkv(0, 3, 7, 7, hq, hkv)
    lengths = jnp.asarray([7, 4, 1], jnp.int32)
    for causal, kv_lengths in ((True, None), (False, lengths), (True, lengths)):
        mask = full_mask(7, 7, batch=3, causal=causal, kv_lengths=kv_lengths, mask=None)
        ref = reference_attention(q, k, v, mask)
        fused = attention(q, k, v, causal=causal, kv_lengths=kv_lengths, implementation="xla")
        np.testing.assert_allclose(fused, ref, atol=1e-5)
    # An explicit per-row mask, as one decode step at each row's own position sees it (T=1 < S).
    q1, k9, v9 = _qkv(1, 3, 1, 9, hq, hkv)
    pos = jnp.asarray([8, 2, 5])
    mask = jnp.arange(9)[None, None, :] <= pos[:, None, None]
    ref = reference_attention(q1, k9, v9, mask)
    np.testing.assert_allclose(attention(q1, k9, v9, mask=mask, implementation="xla"), ref, atol=1e-5)
    np.testing.assert_allclose(attention(q1, k9, v9, mask=mask), ref, atol=1e-5)  # "auto"


def test_fused_attention_gradients_equal_reference() -> None:
    q, k, v = _qkv(2, 2, 6, 6, 4, 2)
    mask = full_mask(6, 6, batch=2, causal=True, kv_lengths=None, mask=None)

    def loss(fn: Any) -> Any:
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v))), argnums=(0, 1, 2)))(q, k, v)

    fused = loss(lambda q, k, v: attention(q, k, v, causal=True, implementation="xla"))
    ref = loss(lambda q, k, v: reference_attention(q, k, v, mask))
    for a, b in zip(fused, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_model_forward_is_the_same_with_every_attention_implementation() -> None:
    params, lora = tiny_params(TINY_QWEN), tiny_lora(TINY_QWEN)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, TINY_QWEN.vocab_size, (2, 13)))
    outs = [
        jax.jit(lambda p, ad, impl=impl: forward(p, TINY_QWEN, tokens, lora=ad, lora_scale=LORA.scale, attention=impl))(
            params, lora
        )
        for impl in ("auto", "xla", "reference")
    ]
    np.testing.assert_allclose(outs[0], outs[2], atol=2e-5)
    np.testing.assert_allclose(outs[1], outs[2], atol=2e-5)


def test_cpu_defaults_are_float32_and_xla_attention() -> None:
    assert jax.default_backend() == "cpu"
    assert resolve_compute_dtype("auto") == "float32"
    assert choose_implementation(jnp.float32, has_mask=False) == "xla"
    assert choose_implementation(jnp.bfloat16, has_mask=False) == "xla"  # cuDNN only on a GPU
    assert choose_implementation(jnp.float64, has_mask=False) == "reference"
    bb = _TinyBackbone(TINY, tiny_params(TINY))
    trainer = LoraTrainer.create(bb, LORA)  # type: ignore[arg-type]
    assert trainer.compute_dtype == "float32" and trainer.base_params is bb.params
    with pytest.raises(FlowcError):
        resolve_compute_dtype("float8")
    with pytest.raises(FlowcError):
        LoraTrainer.create(bb, LORA, attention="flash")  # type: ignore[arg-type]
    with pytest.raises(FlowcError):
        attention(*_qkv(0, 1, 2, 2, 2, 1), implementation="flash")


def _examples(n: int = 4, seed: int = 0) -> list[Example]:
    rng = np.random.RandomState(seed)
    return [
        Example(tuple(rng.randint(1, 60, rng.randint(3, 9))), tuple(rng.randint(1, 60, rng.randint(2, 5))))
        for _ in range(n)
    ]


@pytest.mark.parametrize("cfg", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_bfloat16_loss_and_gradient_are_close_to_float32(cfg: ModelConfig) -> None:
    params, lora = tiny_params(cfg), tiny_lora(cfg)
    tb = make_batch(_examples(), pad_id=0)
    batch = {k: jnp.asarray(getattr(tb, k)) for k in ("tokens", "positions", "targets", "weights")}
    grad = jax.jit(jax.value_and_grad(lambda ad, p: sft_loss(ad, p, cfg, batch, lora_scale=LORA.scale)))
    loss32, g32 = grad(lora, params)
    loss16, g16 = grad(lora, cast_params(params, jnp.bfloat16))  # float32 master adapter, bfloat16 base
    assert np.isfinite(float(loss16))
    assert abs(float(loss16) - float(loss32)) < 2e-2 * abs(float(loss32))
    for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16)):
        assert b.dtype == jnp.float32  # gradients of the master weights stay float32
        cosine = float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
        assert cosine > 0.99


def test_bfloat16_training_keeps_float32_master_weights_and_learns() -> None:
    bb = _TinyBackbone(TINY_QWEN, tiny_params(TINY_QWEN))
    batch = make_batch(_examples(), pad_id=0)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        trainer = LoraTrainer.create(bb, LORA, learning_rate=1e-2, compute_dtype=dtype)  # type: ignore[arg-type]
        runs[dtype] = [trainer.sft_step(batch) for _ in range(6)] + [trainer.loss(batch)]
        assert all(np.isfinite(runs[dtype]))
        assert {x.dtype for x in jax.tree.leaves(trainer.lora)} == {jnp.dtype(jnp.float32)}
        floats = [x for x in jax.tree.leaves(trainer.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}
    assert jax.tree.leaves(trainer.base_params)[0].dtype == jnp.bfloat16
    assert runs["bfloat16"][-1] < 0.8 * runs["bfloat16"][0]
    np.testing.assert_allclose(runs["bfloat16"], runs["float32"], rtol=2e-2)


@pytest.mark.parametrize("cfg", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_compiled_decode_matches_step_by_step_decoding(cfg: ModelConfig) -> None:
    params, lora = tiny_params(cfg), tiny_lora(cfg)
    out = decode_batch(params, cfg, PROMPTS, max_new_tokens=12, lora=lora, lora_scale=LORA.scale)
    for prompt, got in zip(PROMPTS, out):
        ref = generate(params, cfg, prompt, max_new_tokens=12, lora=lora, lora_scale=LORA.scale)[0]
        assert got.ids == ref.ids and got.finish_reason == ref.finish_reason == "length"
        np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=1e-4)


def test_compiled_decode_stops_each_row_on_its_own_stop_tokens() -> None:
    params = tiny_params(TINY)
    free = decode_batch(params, TINY, PROMPTS[:3], max_new_tokens=10)
    stop = free[0].ids[3]  # the first row stops before its 4th token
    out = decode_batch(params, TINY, PROMPTS[:3], max_new_tokens=10, stop_ids=[stop])
    assert out[0].ids == free[0].ids[:3] and out[0].finish_reason == "stop"
    for f, o in zip(free, out):
        cut = f.ids.index(stop) if stop in f.ids else len(f.ids)
        assert o.ids == f.ids[:cut] and len(o.logprobs) == len(o.ids)
    # One list per row: only the second row's own stop token ends it.
    per_row = decode_batch(params, TINY, PROMPTS[:3], max_new_tokens=10, stop_ids=[[], [free[1].ids[0]], []])
    assert per_row[1].ids == () and per_row[1].finish_reason == "stop"
    assert per_row[0].ids == free[0].ids and per_row[2].ids == free[2].ids
    with pytest.raises(FlowcError):
        decode_batch(params, TINY, [[1, 2], []], max_new_tokens=4)
    with pytest.raises(FlowcError):
        decode_batch(params, TINY, PROMPTS[:3], max_new_tokens=4, stop_ids=[[1], [2]])


def test_groups_prefill_each_prompt_once_and_equal_repeated_prompts() -> None:
    params = tiny_params(TINY_QWEN)
    prompts = PROMPTS[:3]
    repeated = [p for p in prompts for _ in range(3)]
    grouped = decode_batch(params, TINY_QWEN, prompts, max_new_tokens=6, n=3)
    flat = decode_batch(params, TINY_QWEN, repeated, max_new_tokens=6)
    assert [s.ids for s in grouped] == [s.ids for s in flat]
    for g, f in zip(grouped, flat):
        np.testing.assert_allclose(g.logprobs, f.logprobs, atol=1e-5)
    sampled = decode_batch(params, TINY_QWEN, prompts, max_new_tokens=6, n=3, temperature=1.0, seed=1)
    assert len(sampled) == 9 and len({s.ids for s in sampled[:3]}) > 1  # a group's rows differ


def test_sampled_rollouts_are_seeded_and_their_logprobs_are_what_the_trainer_scores() -> None:
    bb = _TinyBackbone(TINY_QWEN, tiny_params(TINY_QWEN))
    trainer = LoraTrainer.create(bb, LORA, learning_rate=1e-2)  # type: ignore[arg-type]
    trainer.lora = tiny_lora(TINY_QWEN)  # a policy that differs from the base
    a = trainer.sample(PROMPTS, max_new_tokens=8, temperature=1.0, seed=5, stop_ids=())
    b = trainer.sample(PROMPTS, max_new_tokens=8, temperature=1.0, seed=5, stop_ids=())
    assert a == b and len({s.ids for s in a}) == len(PROMPTS)
    assert trainer.sample(PROMPTS, max_new_tokens=8, temperature=1.0, seed=6, stop_ids=()) != a
    batch = make_batch([Example(tuple(p), s.ids) for p, s in zip(PROMPTS, a)], pad_id=0)
    pb = trainer.policy_batch(batch, np.zeros(len(PROMPTS)))
    for i, s in enumerate(a):
        np.testing.assert_allclose(pb.old_logprobs[i, : len(s.ids)], s.logprobs, atol=1e-4)


def test_bfloat16_decode_runs_and_mostly_agrees_with_float32() -> None:
    params = tiny_params(TINY_QWEN)
    f32 = decode_batch(params, TINY_QWEN, PROMPTS, max_new_tokens=6)
    b16 = decode_batch(cast_params(params, jnp.bfloat16), TINY_QWEN, PROMPTS, max_new_tokens=6)
    assert all(np.isfinite(s.logprobs).all() for s in b16)
    # Greedy choices can part at near-ties after bfloat16 rounding; the first token rarely does.
    assert sum(x.ids[0] == y.ids[0] for x, y in zip(f32, b16)) >= len(PROMPTS) - 1
