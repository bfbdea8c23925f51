"""Rollouts: the pipeline run by its own executor on training questions, with the trainable
backbone's calls sampled, and the traces turned into JADE's experience buffer.

The pipeline is not re-implemented: `Run.evaluate` runs the compiled candidate (the current role
prompts, and the current adapter, which the requests carry) through the job's metered, journaled
client, wrapped in `SamplingLM`. That wrapper changes only the requests to the trainable models:

- `temperature` (1.0 by default, the release's training temperature) and a `seed` per rollout, so
  the `group_size` rollouts of a question differ, and a resumed job's journal replays them;
- the reply's grammar is dropped (`grammar=False`, the default): llama.cpp would otherwise mask
  every token the grammar forbids and renormalize, and the tokens would not be samples of the
  policy that jax scores and trains (the log-probs of the update would be those of another
  distribution). Without the grammar the sampled replies follow the policy, and the format
  penalties (`rewards.py`) teach the output contract that the grammar enforces at serving time.
  `grammar=True` keeps it (replies then always parse, and the PPO ratio is off-policy where the
  grammar cut mass).

Everything else — prompts, routing, retrieval, repairs, fallbacks — is the runtime's own.

Who samples (`rollout_engine`): the runtime's client (llama.cpp, serving the base file with the
adapter: 2–3× more tokens per CPU-second than jax's decoder on a CPU), or `JaxSampler`, which
answers the rollouts' requests with the jax policy itself — exactly the weights being trained,
without exporting and loading an adapter per update (the right choice on an accelerator). It sits
under the job's journal like any model client, so a resumed job replays its replies too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.optimizers.base import Example
from flowc.optimizers.jade.buffer import ExperienceBuffer
from flowc.optimizers.jade.rewards import RewardConfig, episode_transitions
from flowc.optimizers.skeleton import Run
from flowc.runtime.lm import LMClient, LMRequest, LMResponse


class SamplingLM:
    """An LMClient that samples the trainable models' replies (see the module docstring)."""

    def __init__(
        self, inner: LMClient, models: Collection[str], *, temperature: float, seed: int, grammar: bool = False
    ) -> None:
        self.inner = inner
        self.models = frozenset(models)
        self.temperature = temperature
        self.seed = seed
        self.grammar = grammar

    async def complete(self, request: LMRequest) -> LMResponse:
        if request.model in self.models:
            update: dict[str, Any] = {"temperature": self.temperature, "seed": self.seed}
            if not self.grammar:
                update["constraint"] = None
            request = request.model_copy(update=update)
        return await self.inner.complete(request)


class JaxSampler:
    """An LMClient that answers sampled requests (temperature > 0, a seed) to the trainable models
    with `reply(messages, temperature, max_tokens, seed)` of the jax policy, and passes every other
    request (validation, greedy calls, other models) to `inner`."""

    def __init__(
        self, inner: LMClient, models: Collection[str], reply: Callable[..., tuple[str, int, int, str]]
    ) -> None:
        self.inner = inner
        self.models = frozenset(models)
        self.reply = reply

    async def complete(self, request: LMRequest) -> LMResponse:
        if request.model not in self.models or request.seed is None or request.temperature <= 0:
            return await self.inner.complete(request)
        started = time.perf_counter()
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        text, prompt_tokens, completion_tokens, finish = await asyncio.to_thread(
            self.reply,
            messages,
            temperature=request.temperature,
            max_tokens=request.max_tokens or 256,
            seed=request.seed,
        )
        return LMResponse(
            text=text,
            model=request.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - started,
            finish_reason=finish,
        )


def rollout_seed(job_seed: int, step: int, sample: int) -> int:
    """The sampling seed of rollout `sample` of a step: fixed by the job's seed and the step."""
    return (job_seed * 1_000_003 + step * 7_919 + sample * 104_729) % (2**31 - 1)


async def collect(
    run: Run,
    pipeline: CompiledPipeline,
    questions: Sequence[Example],
    models: Collection[str],
    *,
    group_size: int,
    temperature: float,
    grammar: bool,
    rewards: RewardConfig,
) -> tuple[ExperienceBuffer, dict[str, float]]:
    """`group_size` sampled rollouts of every question through the executor; returns the buffer and
    what they cost (LM calls, prompt and completion tokens of the trainable models' calls)."""
    buffer = ExperienceBuffer()
    cost = {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0}
    for sample in range(group_size):
        lm = SamplingLM(
            run.job.pipeline_lm,
            models,
            temperature=temperature,
            seed=rollout_seed(run.seed, run.step, sample),
            grammar=grammar,
        )
        evaluation = await run.evaluate(pipeline, questions, lm=lm)
        for q, item in enumerate(evaluation.items):
            episode = sample * len(questions) + q
            ts = episode_transitions(item.run, pipeline, models, item.score, rewards, episode=episode, question=q)
            buffer.add_episode(episode, item.score, ts)
            for c in item.run.lm_calls:
                if c.model in models:
                    cost["calls"] += 1
                    cost["prompt_tokens"] += c.prompt_tokens
                    cost["completion_tokens"] += c.completion_tokens
    return buffer, cost


__all__ = ("JaxSampler", "SamplingLM", "collect", "rollout_seed")
