"""The shared backbone as a policy: JADE's PPO update on a LoRA adapter (jax, through
`flowc.backbone`'s public API).

One update (ALGORITHMS.md §4.4, "1 PPO epoch per batch, token-mean loss, clip 0.2"):

1. every transition of the buffer becomes a token sequence: the node's chat messages rendered with
   the model's own chat template (as llama.cpp renders them), then the sampled reply, then the
   end-of-turn token if the reply ended on it. Transitions whose prompt is longer than
   `max_prompt_tokens` are dropped, as the release drops prompts over `max_prompt_length`;
2. the sequences are cut into minibatches of `minibatch` transitions (sorted by length so that a
   minibatch pads little; the minibatches' order is shuffled with the seed). Sequence lengths are
   rounded up to a few buckets and every minibatch has the same number of rows (padding rows score
   nothing), so jax compiles a handful of programs, not one per batch;
3. before any gradient step, the log-probs of every sampled token are computed under the current
   adapter in float32: these are the PPO ratio's "old" policy. The replies were sampled by
   llama.cpp from the quantized file with the same adapter (on a CPU), so the first ratio is
   exactly 1 by construction and the sampler's quantization shows only as a small off-policy
   bias; and, when `kl_coef > 0` or `measure_kl`, under the base (adapter off);
4. `epochs` passes over the minibatches, one clipped policy-gradient step each
   (`LoraTrainer.policy_step`: `-min(rA, clip(r, 1±ε)A)` per token, averaged over the minibatch's
   reply tokens, plus `kl_coef` × KL to the base — 0 in the release). The metrics report the KL
   to the base (`measure_kl`, one more forward pass), or else PPO's approximate KL between the
   updated policy and the sampling one (`approx_kl`, free).

The trainer's whole state (adapter, AdamW moments) is saved per step (`save_state`), so a resumed
job continues exactly where the last completed step left it.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowc.backbone import Backbone, Example, LoraConfig, LoraTrainer, make_batch
from flowc.backbone.batching import TokenBatch
from flowc.backbone.train import PolicyBatch
from flowc.backbone.train_state import load_train_state, save_train_state
from flowc.optimizers.jade.buffer import Transition

#: sequence lengths jax compiles for (a longer sequence rounds up to a multiple of the last)
LENGTH_BUCKETS = (64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


@dataclass(frozen=True)
class PolicyConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "v")
    learning_rate: float = 1e-4
    seed: int = 0
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    minibatch: int = 8
    micro_batch: int = 2
    epochs: int = 1
    max_prompt_tokens: int = 1024
    remat: bool = True
    measure_kl: bool = True


@functools.cache
def load_backbone(path: Path) -> Backbone:
    """The base model, loaded once per process (it is never modified: only adapters train)."""
    return Backbone.load(path)


def _bucket(n: int) -> int:
    for b in LENGTH_BUCKETS:
        if n <= b:
            return b
    step = LENGTH_BUCKETS[-1]
    return -(-n // step) * step


class Policy:
    """The LoRA policy over one base model (see the module docstring)."""

    def __init__(self, base_path: Path, config: PolicyConfig) -> None:
        self.config = config
        self.backbone = load_backbone(Path(base_path))
        rows = max(1, min(config.micro_batch, config.minibatch))
        if config.minibatch % rows:
            rows = 1
        self.trainer = LoraTrainer.create(
            self.backbone,
            LoraConfig(rank=config.rank, alpha=config.alpha, targets=tuple(config.targets)),
            learning_rate=config.learning_rate,
            seed=config.seed,
            micro_batches=config.minibatch // rows,
            remat=config.remat,
        )
        self.end_id = self.backbone.end_of_turn_id

    # -- sequences ----------------------------------------------------------------------------------

    def encode(self, t: Transition) -> Example | None:
        """The transition as (prompt tokens, reply tokens); None when the prompt is too long."""
        tok = self.backbone.tokenizer
        prompt = self.backbone.chat_prompt_ids(list(t.messages))
        if len(prompt) > self.config.max_prompt_tokens:
            return None
        reply = tok.encode(t.completion, parse_special=False) + ([self.end_id] if t.finished else [])
        if not reply:
            return None
        return Example(tuple(prompt), tuple(reply))

    def _batch(self, examples: Sequence[Example]) -> TokenBatch:
        rows = self.config.minibatch
        filler = Example((self.end_id,), (self.end_id,))
        padded = [*examples, *([filler] * (rows - len(examples)))]
        longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in padded) - 1
        replies = max(len(e.completion_ids) for e in padded)
        batch = make_batch(padded, pad_id=self.end_id, length=_bucket(longest), n_targets=-(-replies // 16) * 16)
        weights = batch.weights.copy()
        weights[len(examples) :] = 0.0  # filler rows score nothing
        return dataclasses.replace(batch, weights=weights)

    # -- the update ---------------------------------------------------------------------------------

    def update(
        self, transitions: Sequence[Transition], advantages: Sequence[float], rng: random.Random
    ) -> dict[str, float]:
        """One PPO update on the batch; returns its metrics (loss, kl, clip_frac, ratio, tokens,
        seconds, tokens_per_s, dropped, minibatches)."""
        cfg = self.config
        started = time.perf_counter()
        pairs: list[tuple[Example, float]] = []
        dropped = 0
        for t, a in zip(transitions, advantages, strict=True):
            ex = self.encode(t)
            if ex is None:
                dropped += 1
            else:
                pairs.append((ex, float(a)))
        if not pairs:
            return {"dropped": float(dropped), "minibatches": 0.0, "tokens": 0.0, "seconds": 0.0}
        rng.shuffle(pairs)
        pairs.sort(key=lambda p: len(p[0].prompt_ids) + len(p[0].completion_ids))  # stable: ties keep the shuffle
        chunks = [pairs[i : i + cfg.minibatch] for i in range(0, len(pairs), cfg.minibatch)]
        rng.shuffle(chunks)
        prepared: list[PolicyBatch] = []
        for chunk in chunks:
            batch = self._batch([e for e, _ in chunk])
            adv = np.zeros(cfg.minibatch, np.float32)
            adv[: len(chunk)] = [a for _, a in chunk]
            old = self.trainer.logprobs(batch)
            # The loss's "KL" term is to `ref`: the base (KL penalty, or measured drift), or else
            # the sampling policy itself, which makes the reported figure PPO's approximate KL
            # between the policy being updated and the one that sampled (free: no extra pass).
            ref = self.trainer.logprobs(batch, adapter=False) if self._to_base else old
            prepared.append(PolicyBatch(batch, adv, old, ref))
        metrics: dict[str, list[float]] = {"loss": [], "kl": [], "clip_frac": [], "ratio": []}
        for _ in range(max(cfg.epochs, 1)):
            for pb in prepared:
                m = self.trainer.policy_step(pb, clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef)
                for k in metrics:
                    metrics[k].append(float(m.get(k, 0.0)))
        seconds = time.perf_counter() - started
        tokens = float(sum(len(e.prompt_ids) + len(e.completion_ids) for e, _ in pairs) * max(cfg.epochs, 1))
        out = {k: float(np.mean(v)) for k, v in metrics.items()}
        out.update(
            tokens=tokens,
            reply_tokens=float(sum(len(e.completion_ids) for e, _ in pairs)),
            seconds=seconds,
            tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
            dropped=float(dropped),
            minibatches=float(len(prepared) * max(cfg.epochs, 1)),
        )
        if not self._to_base:
            out["approx_kl"] = out.pop("kl")
        return out

    @property
    def _to_base(self) -> bool:
        return self.config.kl_coef > 0 or self.config.measure_kl

    # -- sampling (the jax rollout engine) ------------------------------------------------------------

    def sample(
        self, messages: Sequence[dict[str, str]], *, temperature: float, max_tokens: int, seed: int
    ) -> tuple[str, int, int, str]:
        """One reply of the current policy (the adapter as trained, in the trainer's precision):
        (text, prompt tokens, reply tokens, finish reason). Uses the backbone's compiled decode loop
        (`LoraTrainer.sample`) where it has one, else the step-by-step reference decoder."""
        prompt = self.backbone.chat_prompt_ids(list(messages))
        max_tokens = min(max_tokens, self.backbone.config.context_length - len(prompt))
        if max_tokens <= 0:
            return "", len(prompt), 0, "length"
        sampler = getattr(self.trainer, "sample", None)
        if sampler is not None:
            out = sampler([prompt], max_new_tokens=max_tokens, temperature=temperature, seed=seed)[0]
        else:
            out = self.backbone.generate(
                prompt,
                max_new_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                lora=self.trainer.lora,
                lora_cfg=self.trainer.lora_cfg,
            )[0]
        text = self.backbone.tokenizer.decode(list(out.ids))
        return text, len(prompt), len(out.ids), out.finish_reason

    # -- files --------------------------------------------------------------------------------------

    def save_state(self, path: Path) -> Path:
        """Save the training state, and continue from the saved copy: jax's results on a CPU depend
        (in the last bits) on whether its inputs came from a file or from a compiled step, and a
        resumed job starts from the file; reloading keeps the two runs bit-identical."""
        saved = save_train_state(self.trainer, path)
        load_train_state(self.trainer, saved)
        return saved

    def load_state(self, path: Path) -> None:
        load_train_state(self.trainer, path)

    def save_adapter(self, path: Path, extra: dict[str, Any] | None = None) -> Path:
        """The adapter (safetensors) and beside it its llama.cpp LoRA GGUF; returns the adapter."""
        saved = self.trainer.save(path, extra=extra)
        self.trainer.export(saved.with_suffix(".gguf"), kind="adapter")
        return saved


__all__ = ("LENGTH_BUCKETS", "Policy", "PolicyConfig", "load_backbone")
