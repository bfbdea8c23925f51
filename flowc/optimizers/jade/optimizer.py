"""JADE (ALGORITHMS.md §4): joint training of a dynamic workflow's planner and executors, which are
one shared backbone conditioned by their role prompts — the weights by PPO on the pipeline's
outcome reward, and (flowc's addition) the role prompts by TextGrad, in alternating rounds.

A round is `weight_steps` PPO updates, then `prompt_steps` TextGrad steps; every update and every
prompt step is one checkpointed step of the shared skeleton. One PPO update:

1. draw `batch_size` training questions (seeded by the job's seed and the step);
2. roll each out `group_size` times through the pipeline's own executor, the trainable model's
   calls sampled at `temperature` with the current adapter (`rollout.py`);
3. every call of the trainable model in every rollout is a transition in one experience buffer,
   rewarded with the episode's metric plus its own format penalty (`rewards.py`);
4. advantages from a group, batch or no baseline (`advantages.py`);
5. one PPO epoch over the buffer on the LoRA adapter (`policy.py`); the adapter is filed in the
   run directory under its content hash and becomes the policy the next rollouts are served with.

At the end of a round's weight updates, the pipeline with the latest adapter is scored on the
validation set and kept (the patch's `<model>.weights`) when the score does not drop. Training
always continues from the latest adapter, as PPO does; the gate only decides which adapter the
patch names. A prompt step is a TextGrad step over the role prompts of the pipeline served with the
kept adapter — the planner's and executors' prompts adapt to what the trained executors do.

docs/jade.md describes the method, its settings, its cost, and every place where it departs from
the paper's release.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.budget import BudgetExceeded
from flowc.optimizers.jade.advantages import BASELINES, assign
from flowc.optimizers.jade.rewards import RewardConfig
from flowc.optimizers.jade.rollout import collect
from flowc.optimizers.scoring import accept
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.lm import LMClient

WEIGHTS, PROMPTS = "weights", "prompts"


@dataclass(kw_only=True)
class Jade(StepOptimizer):
    """Args (every one a setting: `--set NAME=VALUE`; docs/jade.md has the table):
    optimizer_lm / optimizer_model: the critic of the prompt rounds (TextGrad's backward engine).
    rounds: alternating rounds (`--steps`). weight_steps: PPO updates per round. prompt_steps:
        TextGrad steps per round (0: the paper's JADE, weights only).
    batch_size: questions per PPO update. group_size: rollouts per question.
    temperature: sampling temperature of the rollouts. grammar: keep the replies' grammar in rollouts.
    rollout_engine: who samples the rollouts: "llamacpp" (the runtime's client), "jax" (the policy
        itself) or "auto" (jax on an accelerator, llama.cpp on a CPU).
    advantage: "group", "batch" or "none" (advantages.py). whiten: normalize advantages per batch.
    format_penalty, call_cost, retrieval_cost, max_answer_words, max_query_words, max_subquestions:
        the reward (rewards.py).
    learning_rate, lora_rank, lora_alpha, lora_targets, clip_eps, kl_coef, minibatch, micro_batch,
        ppo_epochs, max_prompt_tokens, remat, measure_kl: the PPO update (policy.py).
    prompt_batch_size, critic_max_tokens: the TextGrad steps.
    validate: gate each round's adapter (and prompt edits) on the validation score.
    """

    optimizer_lm: LMClient
    optimizer_model: str = "local/qwen-coder-1.5b"
    rounds: int = 3
    weight_steps: int = 4
    prompt_steps: int = 1
    batch_size: int = 4
    group_size: int = 4
    temperature: float = 1.0
    grammar: bool = False
    rollout_engine: str = "auto"
    advantage: str = "group"
    whiten: bool = True
    format_penalty: float = -2.0
    call_cost: float = 0.0
    retrieval_cost: float = 0.0
    max_answer_words: int = 40
    max_query_words: int = 100
    max_subquestions: int = 7
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q", "v")
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    minibatch: int = 8
    micro_batch: int = 2
    ppo_epochs: int = 1
    max_prompt_tokens: int = 1024
    remat: bool = True
    measure_kl: bool = True
    prompt_batch_size: int = 2
    critic_max_tokens: int = 400
    validate: bool = True
    _policies: dict[Path, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _loaded: dict[Path, str | None] = field(default_factory=dict, init=False, repr=False, compare=False)
    _sampled: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _sampling_policy: Any = field(default=None, init=False, repr=False, compare=False)

    name: ClassVar[str] = "jade"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "system", "weights")
    step_fields: ClassVar[tuple[str, ...]] = ("rounds",)
    #: critics preferred for the prompt rounds when --optimizer-model is not given (the first installed)
    preferred_optimizer_models: ClassVar[tuple[str, ...]] = ("local/qwen-coder-1.5b", "local/qwen-coder-0.5b")

    # -- settings and checks ------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in super().settings().items() if not k.startswith("_")}

    def check(self, compiled: CompiledPipeline, params: list[str]) -> None:
        models = self._models(compiled, params)
        if not models:
            raise _nothing_to_train(compiled)
        bases = {m.base_sha256 for m in models}
        if len(bases) > 1:
            raise FlowcError(
                "invalid-value",
                "'jade' trains one shared backbone, but the trainable models "
                f"{', '.join(m.name for m in models)} are different base files",
                hint="point every trainable role at one model declaration (or one base file), or freeze the others",
            )
        if self.advantage not in BASELINES:
            raise FlowcError(
                "invalid-value",
                f"jade's setting 'advantage' is '{self.advantage}', which is not a baseline",
                hint=f"--set advantage=group (or one of {', '.join(BASELINES)})",
            )
        if self.advantage == "group" and self.group_size < 2:
            raise FlowcError(
                "invalid-value",
                "the group baseline needs at least 2 rollouts per question (group_size)",
                hint="--set group_size=4, or --set advantage=batch for one rollout per question (the release's n = 1)",
            )
        if self.rollout_engine not in ("auto", "llamacpp", "jax"):
            raise FlowcError(
                "invalid-value",
                f"jade's setting 'rollout_engine' is '{self.rollout_engine}', which is not an engine",
                hint="--set rollout_engine=auto (or llamacpp, jax)",
            )
        if self.grammar and self.engine() == "jax":
            raise FlowcError(
                "invalid-value",
                "jade's 'grammar' setting keeps the reply grammar in rollouts, "
                "but the jax rollout engine samples without a grammar",
                hint="--set rollout_engine=llamacpp to sample under the grammar, or leave grammar=false",
            )
        self._sampled = frozenset(m.model_id for m in models)
        for name in (
            "rounds",
            "batch_size",
            "group_size",
            "minibatch",
            "micro_batch",
            "lora_rank",
            "max_prompt_tokens",
        ):
            if int(getattr(self, name)) < 1:
                raise FlowcError("invalid-value", f"jade's '{name}' must be at least 1", hint=f"--set {name}=1")

    def clients(self) -> tuple[LMClient, LMClient]:
        """The runtime's clients; with the jax engine, sampled requests to the backbone are answered
        by the policy under training (inside the job's journal, so resume replays them)."""
        pipeline_lm, optimizer_lm = super().clients()
        if self.engine() == "jax":
            from flowc.optimizers.jade.rollout import JaxSampler

            pipeline_lm = JaxSampler(pipeline_lm, self._sampled, self._jax_reply)
        return pipeline_lm, optimizer_lm

    def engine(self) -> str:
        """The rollout engine this job uses ("auto" resolved by jax's default backend)."""
        if self.rollout_engine != "auto":
            return self.rollout_engine
        import jax

        return "llamacpp" if jax.default_backend() == "cpu" else "jax"

    def _jax_reply(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> tuple[str, int, int, str]:
        if self._sampling_policy is None:
            raise FlowcError("invalid-value", "the jax sampler was asked outside a PPO update", hint="a bug: report it")
        reply: tuple[str, int, int, str] = self._sampling_policy.sample(messages, **kwargs)
        return reply

    def _models(self, compiled: CompiledPipeline, params: Sequence[str]) -> list[Any]:
        from flowc.optimizers.weights import trainable_models

        return [m for m in trainable_models(compiled, self.only, self.frozen) if m.param in params]

    def _phases(self, run: Run) -> list[tuple[str, int]]:
        phases = [(WEIGHTS, self.weight_steps)]
        if self._prompt_params(run.compiled, run.params):
            phases.append((PROMPTS, self.prompt_steps))
        return [(p, n) for p, n in phases if n > 0]

    @staticmethod
    def _prompt_params(compiled: CompiledPipeline, params: Sequence[str]) -> list[str]:
        return [p for p in params if compiled.params[p].kind in ("prompt", "system")]

    # -- the skeleton's hooks -------------------------------------------------------------------------

    def fresh_state(self, run: Run) -> dict[str, Any]:
        prompts = self._prompt_params(run.compiled, run.params)
        return {
            "round": 0,
            "phase": 0,
            "in_phase": 0,
            "policy": None,  # the latest trained adapter ({"path", "sha256"}), what rollouts use
            "train_state": None,  # the trainer's state after the last completed update (in the run dir)
            "ppo_updates": 0,
            "curve": [],  # one row per PPO update: the learning curve
            "history": {p: [] for p in prompts},  # TextGrad's momentum and memory (prompt rounds)
            "memory": {p: [] for p in prompts},
        }

    def max_steps(self) -> int | None:
        per_round = max(self.weight_steps, 0) + max(self.prompt_steps, 0)
        return self.rounds * per_round

    def finished(self, run: Run) -> bool:
        st = run.state
        phases = self._phases(run)
        while phases and int(st["round"]) < self.rounds and int(st["in_phase"]) >= phases[int(st["phase"])][1]:
            st["in_phase"] = 0
            st["phase"] = int(st["phase"]) + 1
            if st["phase"] >= len(phases):
                st["phase"] = 0
                st["round"] = int(st["round"]) + 1
        return not phases or int(st["round"]) >= self.rounds

    async def step(self, run: Run) -> StepReport:
        st = run.state
        kind, count = self._phases(run)[int(st["phase"])]
        last_of_phase = int(st["in_phase"]) + 1 >= count
        if kind == WEIGHTS:
            report = await self._weight_step(run, validate_now=last_of_phase)
        else:
            report = await self._prompt_step(run)
        st["in_phase"] = int(st["in_phase"]) + 1
        return report

    def extra_scores(self, state: Mapping[str, Any]) -> dict[str, float]:
        curve = state.get("curve") or []
        out = {"ppo_updates": float(state.get("ppo_updates", 0))}
        if curve:
            out["reward_first"] = float(curve[0]["outcome"])
            out["reward_last"] = float(curve[-1]["outcome"])
        return out

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        """LM calls (best, worst) of each phase, for --dry-run."""
        from flowc.optimizers.base import trainable_params
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        b = min(self.batch_size, n_train)
        updates = self.rounds * self.weight_steps
        out = {
            "validation baseline": (n_val * best, n_val * worst),
            "rollouts (PPO updates × questions × group)": (
                updates * b * self.group_size * best,
                updates * b * self.group_size * worst,
            ),
            "validation of each round's adapter": (
                (self.rounds * n_val * best, self.rounds * n_val * worst) if self.validate else (0, 0)
            ),
        }
        params = trainable_params(compiled, self.only, self.frozen, kinds=self.param_kinds)
        prompts = self._prompt_params(compiled, params)
        if prompts and self.prompt_steps > 0:
            tg = self._textgrad()
            per_step = tg.projected_calls(compiled, n_train, n_val)
            steps = self.rounds * self.prompt_steps
            per_step.pop("validation baseline", None)
            lo = sum(v[0] for v in per_step.values()) // max(tg.steps, 1)
            hi = sum(v[1] for v in per_step.values()) // max(tg.steps, 1)
            out["prompt rounds (TextGrad: forward, feedback, updates, gate)"] = (steps * lo, steps * hi)
        return out

    # -- weight steps ---------------------------------------------------------------------------------

    async def _weight_step(self, run: Run, *, validate_now: bool) -> StepReport:
        from flowc.optimizers.weights import AdapterStore

        _check_time(run)
        st = run.state
        models = self._models(run.compiled, run.params)
        base = models[0].base_path
        rng = run.rng(1_000_033)
        questions = run.minibatch(rng, self.batch_size)
        config = self._policy_config(run.seed)
        rundir = run.job.rundir.path
        state_in = str(rundir / st["train_state"]) if st["train_state"] else None
        policy = self._policy(base, config, state_in)  # the policy that samples this step
        self._sampling_policy = policy
        rollout_values = {**run.values, **self._weights_values(models, st["policy"])}
        pipeline = run.pipeline(rollout_values)
        if pipeline is None:
            raise FlowcError(
                "invalid-value", "the pipeline with the trained adapter does not check", hint="see log.jsonl"
            )
        buffer, spent = await collect(
            run,
            pipeline,
            questions,
            {m.model_id for m in models},
            group_size=self.group_size,
            temperature=self.temperature,
            grammar=self.grammar,
            rewards=self._reward_config(),
        )
        advantages = assign(buffer, self.advantage, whiten=self.whiten)
        _check_time(run)
        self._sampling_policy = None
        self._loaded[base] = None  # the trainer changes now: a kill from here on means reload on resume
        metrics = policy.update(buffer.transitions, advantages, random.Random(run.seed * 7_919 + run.step))
        folder = run.job.rundir.path / "jade"
        state_file = policy.save_state(folder / f"train-step{run.step}.safetensors")
        self._loaded[base] = str(state_file)
        for old in folder.glob("train-step*.safetensors"):  # the last committed state stays for resume
            if int(old.stem.removeprefix("train-step")) < run.step - 1:
                old.unlink()
        store = AdapterStore(run.job.rundir.path)
        scratch = policy.save_adapter(
            store.scratch(models[0], f"step{run.step}"), extra={"optimizer": "jade", "update": st["ppo_updates"] + 1}
        )
        published = store.publish(models[0], scratch, scratch.with_suffix(".gguf"))
        buffer.save(folder / f"buffer-step{run.step}.jsonl")
        stats = buffer.stats()
        st["policy"] = published.value
        st["train_state"] = str(state_file.relative_to(rundir))
        st["ppo_updates"] = int(st["ppo_updates"]) + 1
        st["updates"] += 1
        row = {
            "step": run.step,
            "round": int(st["round"]) + 1,
            "update": st["ppo_updates"],
            "outcome": stats["outcome"],
            "reward": stats["reward"],
            "penalized": stats["penalized"],
            "transitions": stats["transitions"],
            **{
                k: metrics[k]
                for k in ("loss", "kl", "approx_kl", "clip_frac", "ratio", "tokens_per_s", "seconds")
                if k in metrics
            },
            "rollout_calls": spent["calls"],
            "adapter": published.sha256,
        }
        st["curve"].append(row)
        run.log(event="ppo", **row, roles=stats["roles"], dropped=metrics.get("dropped", 0.0))
        val = None
        kept: bool | None = None
        if validate_now:
            weights = self._weights_values(models, published.value)
            val = await run.validate({**run.values, **weights}) if self.validate else run.val_best
            kept = val is not None and accept(val, run.val_best)
            run.candidate(
                id=f"step{run.step}",
                parent="kept",
                params={m.param: published.sha256 for m in models},
                scores={"train": stats["outcome"], "val": val},
                accepted=kept,
            )
            if kept:
                run.keep(
                    weights,
                    val=val,
                    candidate=f"step{run.step}",
                    parent="base",
                    rationale={
                        m.param: f"{st['ppo_updates']} PPO updates; rollout reward {st['curve'][0]['outcome']:.3f} "
                        f"at the first, {stats['outcome']:.3f} at the last"
                        for m in models
                    },
                )
        details = {
            "reward": stats["outcome"],
            "penalized": stats["penalized"],
            **{k: metrics[k] for k in ("loss", "kl", "approx_kl", "tokens_per_s") if k in metrics},
        }
        # the rollouts' mean outcome is shown as "reward" (it is this step's training score)
        return StepReport(val=val, accepted=kept, phase=f"weights r{int(st['round']) + 1}", details=details)

    def _policy(self, base: Path, config: Any, state_file: str | None) -> Any:
        """The policy over `base`, holding exactly the training state `state_file` (None: fresh).
        A policy is reused across steps (its compiled programs with it) while it holds that state."""
        from flowc.optimizers.jade.policy import Policy

        key = state_file or "fresh"
        policy = self._policies.get(base)
        if policy is None or policy.config != config or self._loaded.get(base) != key:
            if policy is None or policy.config != config or state_file is None:
                policy = self._policies[base] = Policy(base, config)
            if state_file is not None:
                policy.load_state(Path(state_file))
            self._loaded[base] = key
        return policy

    def _policy_config(self, seed: int) -> Any:
        from flowc.optimizers.jade.policy import PolicyConfig

        return PolicyConfig(
            rank=self.lora_rank,
            alpha=self.lora_alpha,
            targets=tuple(self.lora_targets),
            learning_rate=self.learning_rate,
            seed=seed,
            clip_eps=self.clip_eps,
            kl_coef=self.kl_coef,
            minibatch=self.minibatch,
            micro_batch=self.micro_batch,
            epochs=self.ppo_epochs,
            max_prompt_tokens=self.max_prompt_tokens,
            remat=self.remat,
            measure_kl=self.measure_kl,
        )

    @staticmethod
    def _weights_values(models: Sequence[Any], value: Mapping[str, str] | None) -> dict[str, Any]:
        """The same adapter for every trainable model: they are one shared backbone."""
        if value is None:
            return {}
        return {m.param: dict(value) for m in models}

    def _reward_config(self) -> RewardConfig:
        return RewardConfig(
            format_penalty=self.format_penalty,
            call_cost=self.call_cost,
            retrieval_cost=self.retrieval_cost,
            max_answer_words=self.max_answer_words,
            max_query_words=self.max_query_words,
            max_subquestions=self.max_subquestions,
        )

    # -- prompt steps ---------------------------------------------------------------------------------

    def _textgrad(self) -> Any:
        from flowc.optimizers.textgrad import TextGrad

        return TextGrad(
            pipeline_lm=self.pipeline_lm,
            optimizer_lm=self.optimizer_lm,
            optimizer_model=self.optimizer_model,
            steps=1,
            batch_size=self.prompt_batch_size,
            max_tokens=self.critic_max_tokens,
            validate=self.validate,
        )

    async def _prompt_step(self, run: Run) -> StepReport:
        """One TextGrad step over the role prompts, on the pipeline served with the kept adapter."""
        prompts = self._prompt_params(run.compiled, run.params)
        view = Run(
            run.optimizer,
            run.compiled,
            prompts,
            trainset=run.trainset,
            valset=run.valset,
            metric=run.metric,
            seed=run.seed,
            job=run.job,
            state=run.state,
        )
        view.step = run.step
        report = await self._textgrad().step(view)
        report.phase = f"prompts r{int(run.state['round']) + 1}"
        return report


def _nothing_to_train(compiled: CompiledPipeline) -> FlowcError:
    """The error for a pipeline with no trainable local model among the params: located at the
    model to train (the first `local/` one, else the first), with the fix for that model."""
    spec = compiled.spec
    trainable = [n for n, m in spec.models.items() if m.trainable]
    local = [n for n, m in spec.models.items() if m.id.startswith("local/")]
    if trainable:  # declared trainable, but --only/--freeze left its weights out
        name = trainable[0]
        return FlowcError(
            "invalid-value",
            f"'jade' trains the weights of model '{name}', but --only/--freeze leave no weights to train",
            span=spec.span("models", name),
            hint=f"add '{name}.weights' to --only, or take '{name}' and '{name}.weights' out of --freeze",
        )
    name = (local or list(spec.models) or [""])[0]
    where = spec.span("models", name) if name else None
    if local:
        hint = (
            f"add 'trainable: true' to model '{name}' "
            f'(model {name} = "{spec.models[name].id}" {{ trainable: true }}), the backbone every role shares'
        )
    else:
        hint = (
            "declare the shared backbone as a local model with 'trainable: true' "
            '(model backbone = "local/smollm2" { trainable: true }) and point the roles at it'
        )
    return FlowcError(
        "invalid-value",
        f"'jade' trains the weights of a trainable local model, and pipeline '{compiled.name}' has none",
        span=where,
        hint=hint,
    )


def _check_time(run: Run) -> None:
    """Training makes no LM call, so the meter cannot stop it: check the time budget between parts."""
    budget = run.job.meter.budget
    if budget.seconds is not None and run.job.meter.seconds >= budget.seconds:
        raise BudgetExceeded("seconds", f"the time budget of {budget.seconds}s is spent")


__all__ = ("Jade",)
