"""Fast checks of the jax backbone on tiny random-weight models: gradients against finite
differences, LoRA algebra, caching, micro-batching, training steps and adapter files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.test_util import check_grads  # noqa: E402
from tiny_models import LORA, TINY, TINY_QWEN, tiny_lora, tiny_params  # noqa: E402

from flowc.backbone.batching import Example, make_batch  # noqa: E402
from flowc.backbone.checkpoint import load_adapter, save_adapter  # noqa: E402
from flowc.backbone.config import ModelConfig  # noqa: E402
from flowc.backbone.generate import generate  # noqa: E402
from flowc.backbone.lora import LoraConfig, init_lora, merge_lora  # noqa: E402
from flowc.backbone.model import forward  # noqa: E402
from flowc.backbone.objectives import policy_loss, sft_loss, token_logprobs  # noqa: E402
from flowc.backbone.train import LoraTrainer, accumulated_grad  # noqa: E402
from flowc.errors import FlowcError  # noqa: E402


def _examples(n: int = 4, seed: int = 0) -> list[Example]:
    rng = np.random.RandomState(seed)
    return [
        Example(tuple(rng.randint(1, 60, rng.randint(3, 9))), tuple(rng.randint(1, 60, rng.randint(2, 5))))
        for _ in range(n)
    ]


def _arrays(batch: Any) -> dict[str, Any]:
    return {k: jnp.asarray(getattr(batch, k)) for k in ("tokens", "positions", "targets", "weights")}


@dataclasses.dataclass
class _TinyBackbone:
    """What `LoraTrainer` needs of a `Backbone`, over random weights."""

    config: ModelConfig
    params: Any
    sha256: str = "0" * 64


@pytest.mark.parametrize("cfg", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_sft_gradient_matches_finite_differences(cfg: ModelConfig) -> None:
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: x.astype(jnp.float64), tiny_params(cfg))
        lora = jax.tree.map(lambda x: x.astype(jnp.float64), tiny_lora(cfg))
        batch = _arrays(make_batch(_examples(), pad_id=0))

        def f(ad: Any) -> Any:
            return sft_loss(ad, params, cfg, batch, lora_scale=LORA.scale)

        check_grads(jax.jit(f), (lora,), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


def test_policy_gradient_matches_finite_differences() -> None:
    cfg = TINY
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: x.astype(jnp.float64), tiny_params(cfg))
        lora = jax.tree.map(lambda x: x.astype(jnp.float64), tiny_lora(cfg))
        tb = make_batch(_examples(), pad_id=0)
        base = _arrays(tb)
        lp = token_logprobs(lora, params, cfg, base["tokens"], base["positions"], base["targets"], lora_scale=2.0)
        rng = np.random.RandomState(3)
        batch = {
            **base,
            "advantages": jnp.asarray(rng.randn(tb.size)),
            # Old log-probs near the current ones keep every ratio inside the clip range, where the
            # loss is smooth and finite differences are meaningful.
            "old_logprobs": lp + 0.01 * jnp.asarray(rng.randn(*lp.shape)),
            "ref_logprobs": lp + 0.3 * jnp.asarray(rng.randn(*lp.shape)),
        }

        def f(ad: Any) -> Any:
            return policy_loss(ad, params, cfg, batch, lora_scale=LORA.scale, clip_eps=0.2, kl_coef=0.1)[0]

        check_grads(jax.jit(f), (lora,), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cfg", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_fresh_adapter_is_identity_and_merge_is_exact(cfg: ModelConfig) -> None:
    params = tiny_params(cfg)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 11)))
    fwd = jax.jit(lambda p, ad: forward(p, cfg, tokens, lora=ad, lora_scale=LORA.scale))
    base = fwd(params, None)
    fresh = init_lora(jax.random.PRNGKey(0), LORA, cfg)
    np.testing.assert_array_equal(fwd(params, fresh), base)
    lora = tiny_lora(cfg)
    adapted = fwd(params, lora)
    merged = fwd(merge_lora(params, lora, LORA), None)
    assert float(jnp.abs(adapted - base).max()) > 1e-3
    np.testing.assert_allclose(merged, adapted, atol=2e-5)


@pytest.mark.parametrize("cfg", [TINY, TINY_QWEN], ids=["llama", "qwen2"])
def test_greedy_generation_with_cache_matches_full_recompute(cfg: ModelConfig) -> None:
    params, lora = tiny_params(cfg), tiny_lora(cfg)
    prompt = [5, 17, 3, 44, 9]
    out = generate(params, cfg, prompt, max_new_tokens=12, lora=lora, lora_scale=LORA.scale)[0]
    fwd = jax.jit(lambda p, ad, t: forward(p, cfg, t, lora=ad, lora_scale=LORA.scale))
    seq = list(prompt)
    for _ in range(12):
        # Pad to one length so the recompute compiles once; causal attention ignores the padding.
        padded = jnp.asarray([seq + [0] * (len(prompt) + 12 - len(seq))])
        seq.append(int(jnp.argmax(fwd(params, lora, padded)[0, len(seq) - 1])))
    assert list(out.ids) == seq[len(prompt) :]
    full = jax.nn.log_softmax(fwd(params, lora, jnp.asarray([seq]))[0])
    expected = [float(full[len(prompt) - 1 + i, t]) for i, t in enumerate(out.ids)]
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-4)
    assert out.finish_reason == "length"


def test_sampling_is_seeded_and_stops_at_stop_tokens() -> None:
    params = tiny_params(TINY)
    a = generate(params, TINY, [1, 2, 3], max_new_tokens=8, temperature=1.0, n=3, seed=7)
    b = generate(params, TINY, [1, 2, 3], max_new_tokens=8, temperature=1.0, n=3, seed=7)
    assert a == b and len({s.ids for s in a}) > 1
    stop = a[0].ids[2]
    c = generate(params, TINY, [1, 2, 3], max_new_tokens=8, temperature=1.0, n=3, seed=7, stop_ids=(stop,))
    assert c[0].finish_reason == "stop" and stop not in c[0].ids


def test_micro_batches_give_the_same_gradient() -> None:
    cfg, params, lora = TINY, tiny_params(TINY), tiny_lora(TINY)
    # Unequal completion lengths: slices are weighted by their share of the target tokens.
    batch = _arrays(make_batch(_examples(), pad_id=0))

    def loss(ad: Any, p: Any, b: Any) -> Any:
        return sft_loss(ad, p, cfg, b, lora_scale=LORA.scale), {}

    acc = jax.jit(accumulated_grad, static_argnums=(0, 4))
    l1, _, g1 = acc(loss, lora, params, batch, 1)
    l2, _, g2 = acc(loss, lora, params, batch, 2)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_sft_steps_lower_the_loss() -> None:
    # Gradient checkpointing and micro-batching on, the memory-saving configuration.
    bb = _TinyBackbone(TINY, tiny_params(TINY))
    trainer = LoraTrainer.create(bb, LORA, learning_rate=1e-2, micro_batches=2, remat=True)  # type: ignore[arg-type]
    batch = make_batch(_examples(), pad_id=0)
    before = trainer.loss(batch)
    losses = [trainer.sft_step(batch) for _ in range(8)]
    assert losses[0] == pytest.approx(before, rel=1e-4)
    assert trainer.loss(batch) < 0.8 * before
    assert trainer.steps == 8


def test_policy_step_raises_rewarded_and_lowers_penalized_completions() -> None:
    bb = _TinyBackbone(TINY, tiny_params(TINY))
    trainer = LoraTrainer.create(bb, LORA, learning_rate=1e-2)  # type: ignore[arg-type]
    batch = make_batch(_examples(2), pad_id=0)
    pb = trainer.policy_batch(batch, np.array([1.0, -1.0]))
    first = trainer.policy_step(pb, clip_eps=0.2, kl_coef=0.01)
    # A fresh adapter is the base: the KL is zero and every ratio is one.
    assert first["kl"] == pytest.approx(0.0, abs=1e-6) and first["ratio"] == pytest.approx(1.0, abs=1e-5)
    for _ in range(3):
        trainer.policy_step(pb, clip_eps=0.2, kl_coef=0.01)
    after = trainer.logprobs(batch).sum(axis=1)
    before = pb.old_logprobs.sum(axis=1)
    assert after[0] > before[0] and after[1] < before[1]


def test_adapter_save_load_round_trip(tmp_path: Path) -> None:
    lora = jax.tree.map(np.asarray, tiny_lora(TINY))
    path = save_adapter(
        tmp_path / "a.safetensors", lora, LORA, base_sha256="ab" * 32, model_config=TINY, extra={"k": 1}
    )
    loaded, cfg, info = load_adapter(path, expected_base_sha256="ab" * 32)
    assert cfg == LORA and info["model_config"] == TINY and info["extra"] == {"k": 1}
    for x, y in zip(jax.tree.leaves(lora), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(FlowcError) as e:
        load_adapter(path, expected_base_sha256="cd" * 32)
    assert e.value.code == "model-checksum-mismatch"


def test_trainer_load_restores_the_adapter(tmp_path: Path) -> None:
    bb = _TinyBackbone(TINY, tiny_params(TINY))
    trainer = LoraTrainer.create(bb, LORA, learning_rate=1e-2)  # type: ignore[arg-type]
    batch = make_batch(_examples(), pad_id=0)
    for _ in range(2):
        trainer.sft_step(batch)
    path = trainer.save(tmp_path / "adapter.safetensors")
    other = LoraTrainer.create(bb, LORA, seed=5)  # type: ignore[arg-type]
    other.load(path)
    assert other.steps == 2
    np.testing.assert_allclose(other.loss(batch), trainer.loss(batch), rtol=1e-6)


def test_bad_files_and_configs_are_flowc_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(FlowcError) as e:
        load_adapter(junk)
    assert e.value.code == "artifact-invalid"
    with pytest.raises(FlowcError) as e:
        load_adapter(tmp_path / "missing.safetensors")
    assert e.value.code == "model-file-not-found"
    with pytest.raises(FlowcError):
        LoraConfig(targets=("qq",))
    with pytest.raises(FlowcError):
        LoraConfig(rank=0)
    with pytest.raises(FlowcError):
        dataclasses.replace(TINY, n_kv_heads=3)
    with pytest.raises(FlowcError):
        make_batch([], pad_id=0)
    with pytest.raises(FlowcError):
        make_batch(_examples(), pad_id=0, length=4)
