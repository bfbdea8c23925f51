"""POQD — performance-oriented query decomposition (ALGORITHMS.md §3; docs/poqd.md).

ALG2 alternates two things until the decomposer prompt stops changing, then trains the generator
to convergence:

- ALG1, prompt search (generator fixed): the history LS starts with the current prompt and its
  loss L(Θ; p_old); up to κ times, the optimizer LLM proposes a new prompt *prefix* from LS
  (OPRO-style meta-prompt), the decomposer splits every training question with prefix ⊕ the
  spec's prompt, the sub-queries go through the hallucination filter, MaxSim retrieves the top-K
  passages, and the candidate's loss −log Σ_D P_Θ(a | Q, D) P(D | Q) is computed with the generator
  (the reader's model on the jax backbone). The first candidate that lowers the loss by ≥ α is
  the new prompt; if none does, the prompt is unchanged and the alternation ends.
- τ training steps of the generator (LoRA) on the same loss with the new prompt.

The trained adapter is the reader model's weights param (`<model>.weights`): every τ-step block and
the end of training publish it with `AdapterStore.publish` (content-addressed in the run directory,
with the llama.cpp LoRA GGUF the runtime serves beside it), so the patch holds the searched prompt
and the adapter, and the validation gate scores the pipeline served with both. With the weights
frozen (`--freeze <model>.weights`, or `--only` without them) POQD searches the prompt only, the
generator fixed at the base model.

Every unit — the first scoring, one proposal, one rescoring, one training step, the validation —
is a checkpointed step of the skeleton (`StepOptimizer`): a killed job resumes at the step it was
in, with the LM calls answered from the journal and the generator's adapter and optimizer state
loaded from the run directory, so it ends with the same prompt and the same adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.base import trainable_params
from flowc.optimizers.budget import BudgetExceeded
from flowc.optimizers.poqd.downstream import Downstream
from flowc.optimizers.poqd.loss import sufficient_decrease
from flowc.optimizers.poqd.metaprompt import meta_prompt, read_instruction
from flowc.optimizers.poqd.roles import Roles, find_roles
from flowc.optimizers.scoring import Metric, accept
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.lm import LMClient, LMRequest, Message
from flowc.runtime.resources import RetrieverPool
from flowc.spec.adapters import served_path

if TYPE_CHECKING:
    from flowc.optimizers.weights import TrainableModel


@dataclass
class POQD(StepOptimizer):
    """Args (defaults: the paper's table, ALGORITHMS.md §3.5; (inferred) ones are flowc's choices):
    alpha: the loss decrease a new prompt must bring (0.02). tau: generator steps per round (3).
    kappa: optimizer proposals per prompt search (5).
    max_rounds: bound on the alternation's rounds (the paper has none; (inferred) 10).
    final_steps, tol: "train to convergence": at most `final_steps` steps, stopping when a block of
        tau steps lowers the training loss by less than `tol` ((inferred) 30, 0.01).
    batch_size, micro_batch: training questions per step, and per gradient micro-batch.
    top_k: passages per question in the loss (0: the retrieve node's k). retrieval_temperature: of
        the softmax of MaxSim scores that gives P(D | Q) (1.0).
    rank, lora_alpha, targets, learning_rate: the generator's LoRA and AdamW.
    max_sequence: tokens of one generator sequence (prompt with one passage, and the answer).
    max_tokens, optimizer_temperature, max_history, exemplars: the optimizer LLM's reply length,
        sampling temperature (OPRO's 1.0, seeded), the instructions shown, the questions shown.
    decomposer_node, reader_node: choose the nodes when a pipeline has several candidates.
    gate: revert the result when the validation score drops below the baseline.
    retrievers: the retriever pool (corpus embeddings); tests pass one with a model-free encoder.
    """

    optimizer_lm: LMClient
    optimizer_model: str
    alpha: float = 0.02
    tau: int = 3
    kappa: int = 5
    max_rounds: int = 10
    final_steps: int = 30
    tol: float = 0.01
    batch_size: int = 4
    micro_batch: int = 1
    top_k: int = 0
    retrieval_temperature: float = 1.0
    rank: int = 8
    lora_alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "v")
    learning_rate: float = 1e-3
    max_sequence: int = 512
    max_tokens: int = 200
    optimizer_temperature: float = 1.0
    max_history: int = 20
    exemplars: int = 3
    decomposer_node: str = ""
    reader_node: str = ""
    gate: bool = True

    name: ClassVar[str] = "poqd"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "weights")
    step_fields: ClassVar[tuple[str, ...]] = ("max_rounds",)

    def __post_init__(self) -> None:
        #: the retriever pool (corpus embeddings; default: the job's); tests set one whose encoder
        #: needs no model
        self.retrievers: RetrieverPool | None = None
        #: builds the generator from the reader's base GGUF and the seed (default: the jax
        #: `Generator`); tests pass a scripted one
        self.generator_factory: Callable[[Path, int], Any] | None = None
        self._roles: Roles | None = None
        self._down: Downstream | None = None
        self._gen: Any = None
        self._reader: TrainableModel | None = None

    async def optimize_async(self, compiled: CompiledPipeline, **kwargs: Any) -> Any:
        self._roles, self._down, self._gen, self._reader = None, None, None, None  # one job's parts
        self.roles_of(compiled, kwargs["metric"].output)
        return await super().optimize_async(compiled, **kwargs)

    # -- settings and checks -----------------------------------------------------------------------

    def preflight(self, compiled: CompiledPipeline, metric: Metric) -> None:
        self._roles = None  # the roles of this pipeline, with the reader of the scored output
        self.roles_of(compiled, metric.output)
        super().preflight(compiled, metric)

    def select_params(self, compiled: CompiledPipeline) -> list[str]:
        """The decomposer's prompt, then the reader's weights unless --only/--freeze leave them out."""
        roles = self.roles_of(compiled)
        weights = trainable_params(compiled, self.only, self.frozen, kinds=("weights",))
        return [roles.prompt_param, *([roles.weights_param] if roles.weights_param in weights else [])]

    def roles_of(self, compiled: CompiledPipeline, output: str | None = None) -> Roles:
        if self._roles is None:
            scored = output or next(iter(compiled.spec.outputs), "")
            self._roles = find_roles(
                compiled, output=scored, decomposer=self.decomposer_node, generator=self.reader_node
            )
        return self._roles

    def check(self, compiled: CompiledPipeline, params: list[str]) -> None:
        where = "in the spec's 'optimize: {poqd: {...}}' or with --set"
        for key, low in (("tau", 1), ("kappa", 1), ("batch_size", 1), ("micro_batch", 1), ("max_rounds", 0)):
            if getattr(self, key) < low:
                raise FlowcError(
                    "invalid-value",
                    f"POQD's {key} must be at least {low}, not {getattr(self, key)}",
                    hint=f"set {key} {where} {key}={max(low, 1)}",
                )
        for key, value, ok, need, example in (
            ("alpha", self.alpha, self.alpha >= 0, ">= 0", "0.02"),
            ("retrieval_temperature", self.retrieval_temperature, self.retrieval_temperature > 0, "> 0", "1.0"),
        ):
            if not ok:
                raise FlowcError(
                    "invalid-value",
                    f"POQD needs {key} {need}, not {value}",
                    hint=f"set {key} {where} {key}={example}",
                )
        roles = self.roles_of(compiled)
        if roles.prompt_param not in trainable_params(compiled, self.only, self.frozen, kinds=("prompt",)):
            raise FlowcError(
                "invalid-value",
                f"POQD searches the decomposer's prompt, but '{roles.prompt_param}' is frozen",
                span=compiled.spec.key_span("nodes", roles.decomposer),
                hint=f"leave node '{roles.decomposer}' trainable (and in --only, when given)",
            )
        model = compiled.spec.models[roles.generator_model]
        if not model.id.startswith("local/"):
            raise FlowcError(
                "invalid-value",
                f"POQD trains the reader's model on flowc's jax backbone; '{roles.generator_model}' is '{model.id}'",
                span=compiled.spec.span("models", roles.generator_model, "id"),
                hint="give node '" + roles.generator + "' an embedded model (local/smollm2, local/gguf:<path>)",
            )
        if not model.trainable:
            raise FlowcError(
                "invalid-value",
                f"POQD trains the weights of the reader's model '{roles.generator_model}', which is not trainable",
                span=compiled.spec.key_span("models", roles.generator_model),
                hint=f"add 'trainable: true' to model '{roles.generator_model}' (and --freeze "
                f"{roles.weights_param} to search the prompt with the reader's weights fixed)",
            )

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        proposals = max(1, self.max_rounds) * self.kappa
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "decomposing the training questions": (n_train, n_train * (1 + proposals) * 2),
            "optimizer proposals": (1, proposals),
            "validation of the result": (n_val * best, n_val * worst),
        }

    def max_steps(self) -> int | None:
        return 2 + self.max_rounds * (self.kappa + self.tau + 1) + self.final_steps + self.final_steps // self.tau

    def fresh_state(self, run: Run) -> dict[str, Any]:
        return {
            "phase": "search",
            "template": run.compiled.params[run.params[0]].value,
            "prefix": "",
            "prefix_loss": None,
            "subq": None,
            "history": [],
            "proposals": 0,
            "round": 1,
            "block": 0,
            "gen": {"file": None, "steps": 0},
            "final": {"last": None, "steps": 0},
            "losses": [],
            "adapter": None,
            "published_steps": 0,
        }

    async def start(self, run: Run) -> None:
        await self._ensure(run)  # the validation baseline uses the job's retrievers
        await super().start(run)

    def finished(self, run: Run) -> bool:
        return run.state["phase"] == "done"

    def extra_scores(self, state: Any) -> dict[str, float]:
        losses = state.get("losses") or []
        out = {
            "rounds": float(state.get("round", 1) - 1),
            "proposals": float(sum(1 for h in losses if h.get("kind") == "proposal")),
            "generator_steps": float((state.get("gen") or {}).get("steps", 0)),
        }
        if losses:
            out["train_loss_before"] = float(losses[0]["loss"])
            out["train_loss_after"] = float(losses[-1]["loss"])
        return out

    # -- the steps -----------------------------------------------------------------------------------

    async def step(self, run: Run) -> StepReport:
        st = run.state
        await self._ensure(run)
        if st["phase"] == "search":
            if st["subq"] is None:
                return await self._score_initial(run)
            if st["prefix_loss"] is None:
                return self._rescore(run)
            return await self._propose(run)
        if st["phase"] in ("train", "final"):
            return self._train(run)
        return await self._validate(run)

    async def _score_initial(self, run: Run) -> StepReport:
        """LS := [(p_old, L(Θ; p_old))] for the spec's own prompt (the initial prompt)."""
        st = run.state
        down = self._downstream()
        subq, unreadable = await down.subqueries(run.pipeline(run.values) or run.compiled, run.job.pipeline_lm)
        loss = down.loss(down.retrieve(subq))
        st.update(subq=subq, prefix_loss=loss, history=[[st["prefix"], loss]], proposals=0)
        st["losses"].append({"kind": "initial", "round": st["round"], "loss": loss})
        run.candidate(id="p0", parent=None, params={}, scores={"loss": loss}, accepted=True, unreadable=unreadable)
        if self.max_rounds == 0:
            self._enter_final(run)
        return StepReport(phase=f"round {st['round']}: spec's prompt, loss {loss:.3f}", details={"loss": loss})

    def _rescore(self, run: Run) -> StepReport:
        """After τ training steps: L(Θ; p_old) with the new generator (no LM call)."""
        st = run.state
        down = self._downstream()
        loss = down.loss(down.retrieve(st["subq"]))
        st.update(prefix_loss=loss, history=[[st["prefix"], loss]], proposals=0)
        st["losses"].append({"kind": "rescore", "round": st["round"], "loss": loss})
        run.log(event="rescored", round=st["round"], loss=loss)
        return StepReport(phase=f"round {st['round']}: prompt rescored, loss {loss:.3f}", details={"loss": loss})

    async def _propose(self, run: Run) -> StepReport:
        """One of ALG1's κ proposals."""
        st = run.state
        down = self._downstream()
        st["proposals"] += 1
        cid = f"r{st['round']}-p{st['proposals']}"
        rng = run.rng()
        shown = rng.sample(range(len(run.trainset)), min(self.exemplars, len(run.trainset)))
        exemplars = [
            {"question": down.query_of(run.trainset[i]), "answer": str(run.trainset[i][down.target])} for i in shown
        ]
        text = meta_prompt(st["template"], st["history"], exemplars, max_history=self.max_history)
        request = LMRequest(
            model=self.optimizer_model,
            messages=(Message(role="user", content=text),),
            temperature=self.optimizer_temperature,
            max_tokens=self.max_tokens,
            seed=rng.randrange(2**31),
            node="poqd-optimizer",
        )
        reply = (await run.job.optimizer_lm.complete(request)).text
        prefix = read_instruction(reply)
        report = StepReport(phase=f"round {st['round']}: proposal {st['proposals']}/{self.kappa}", accepted=False)
        known = {h[0] for h in st["history"]}
        if prefix is None or prefix in known:
            why = "unreadable" if prefix is None else "repeats an instruction of the history"
            run.log(event="proposal-skipped", candidate=cid, reason=why, reply=reply[:500])
            run.candidate(id=cid, parent=None, params={}, scores={}, accepted=False, skipped=why)
        else:
            full = _prompt(prefix, st["template"])
            candidate = run.pipeline({**run.values, run.params[0]: full})
            if candidate is None:
                run.candidate(id=cid, parent=None, params={"prefix": prefix}, scores={}, accepted=False)
            else:
                subq, unreadable = await down.subqueries(candidate, run.job.pipeline_lm)
                loss = down.loss(down.retrieve(subq))
                st["history"].append([prefix, loss])
                st["losses"].append({"kind": "proposal", "round": st["round"], "loss": loss})
                ok = sufficient_decrease(st["prefix_loss"], loss, self.alpha)
                run.candidate(
                    id=cid,
                    parent=_prefix_id(st["prefix"]),
                    params={run.params[0]: full},
                    scores={"loss": loss, "loss_old": st["prefix_loss"], "decrease": st["prefix_loss"] - loss},
                    accepted=ok,
                    unreadable=unreadable,
                )
                report.details = {"loss": loss, "old": st["prefix_loss"]}
                verdict = " accepted" if ok else ""
                report.phase = f"{report.phase}, loss {st['prefix_loss']:.3f} -> {loss:.3f}{verdict}"
                st["updates"] += 1
                if ok:
                    note = {run.params[0]: f"downstream loss {st['prefix_loss']:.4f} -> {loss:.4f}"}
                    run.keep({run.params[0]: full}, val=None, candidate=cid, rationale=note)
                    st.update(prefix=prefix, prefix_loss=loss, subq=subq, phase="train", block=0)
                    if not self._trains(run):  # the generator is fixed: the next search starts at once
                        self._next_round(run, loss)
                    report.accepted = True
                    return report
        if st["proposals"] >= self.kappa:  # ALG1 returns p_old: the prompt stopped changing
            run.log(event="prompt-converged", round=st["round"], loss=st["prefix_loss"])
            self._enter_final(run)
        return report

    def _trains(self, run: Run) -> bool:
        """Whether the reader's weights are trained (not frozen by --only/--freeze)."""
        return self.roles_of(run.compiled).weights_param in run.params

    def _next_round(self, run: Run, loss: float | None) -> None:
        """After a round's training (or its accepted prompt, with the generator fixed): the next
        search, which starts from L(Θ; p) (rescored when the generator changed), or the end."""
        st = run.state
        st.update(
            round=st["round"] + 1, prefix_loss=loss, history=[] if loss is None else [[st["prefix"], loss]], block=0
        )
        st["proposals"] = 0
        if st["round"] <= self.max_rounds:
            st["phase"] = "search"
        elif self._trains(run):
            st.update(phase="final", final={"last": None, "steps": 0})
        else:
            st["phase"] = "validate"

    def _enter_final(self, run: Run) -> None:
        """Train to convergence (or, with the generator fixed, validate)."""
        st = run.state
        if not self._trains(run):
            st["phase"] = "validate"
            return
        st.update(phase="final", block=0)
        st["final"] = {"last": st["prefix_loss"], "steps": 0}

    def _train(self, run: Run) -> StepReport:
        st = run.state
        budget = run.job.meter.budget
        if budget.seconds is not None and run.job.meter.seconds >= budget.seconds:
            if st["gen"]["steps"] > st["published_steps"]:
                self._publish(run)
                st["phase"] = "validate"
                return StepReport(phase="time budget spent: adapter kept")
            raise BudgetExceeded("seconds", f"the time budget of {budget.seconds}s is spent")
        down = self._downstream()
        rng = run.rng(7_919)
        idx = rng.sample(range(len(run.trainset)), min(self.batch_size, len(run.trainset)))
        retrieved = down.retrieve(st["subq"])
        groups, priors = down.training_batch(retrieved, idx)
        loss = self._gen.train_step(groups, priors, down.k)
        self._save_generator(run)
        st["block"] += 1
        phase = st["phase"]
        n = f"{st['block']}/{self.tau}" if phase == "train" else f"{st['final']['steps'] + 1}/{self.final_steps}"
        report = StepReport(phase=f"{phase}: step {n}, batch loss {loss:.3f}", details={"batch_loss": loss})
        if phase == "train" and st["block"] >= self.tau:
            self._publish(run)
            self._next_round(run, None)
        elif phase == "final":
            st["final"]["steps"] += 1
            if st["block"] >= self.tau or st["final"]["steps"] >= self.final_steps:
                now = down.loss(retrieved)
                st["losses"].append({"kind": "final", "round": st["round"], "loss": now})
                last = st["final"]["last"]
                converged = last is not None and last - now < self.tol
                st["final"]["last"], st["block"] = now, 0
                report.details["train_loss"] = now
                report.phase = f"{report.phase}, training loss {now:.3f}"
                if converged or st["final"]["steps"] >= self.final_steps:
                    self._publish(run)
                    st["phase"] = "validate"
        return report

    async def _validate(self, run: Run) -> StepReport:
        """flowc's gate: the pipeline with the searched prompt and served with the trained adapter
        (both are in the kept values) is scored on the validation set."""
        st = run.state
        val = await run.validate(run.values)
        kept = val is not None and (not self.gate or accept(val, float(st["val_base"] or 0.0)))
        if kept:
            st["val_best"] = val
        else:
            base = {p: run.compiled.params[p].value for p in run.values}
            run.log(event="gate-reverted", val=val, val_base=st["val_base"])
            st["values"] = base
        run.candidate(
            id="result",
            parent=_prefix_id(st["prefix"]),
            params={k: v for k, v in run.values.items() if v != run.compiled.params[k].value},
            scores={"val": val, "val_base": st["val_base"]},
            accepted=kept,
            adapter=st["adapter"],
        )
        st["phase"] = "done"
        return StepReport(phase="validation", val=val, accepted=kept)

    # -- the generator -------------------------------------------------------------------------------

    async def _ensure(self, run: Run) -> None:
        """Build (once per job and process) the downstream machinery and the generator, resuming the
        generator from the run directory's last saved state."""
        if self._down is not None:
            return
        roles = self.roles_of(run.compiled, run.metric.output)
        pool = self.retrievers or run.job.scorer.retrievers
        run.job.scorer.retrievers = pool
        self._down = await Downstream.build(
            run.compiled,
            roles,
            run.trainset,
            run.metric.target,
            pool,
            k=self.top_k,
            temperature=self.retrieval_temperature,
        )
        from flowc.runtime.local_provider import resolve_model_path

        base = resolve_model_path(run.compiled.spec.models[roles.generator_model].id)
        self._gen = (self.generator_factory or self.lora_generator)(base, run.seed)
        saved = run.state["gen"]["file"]
        if saved:
            self._gen.load_state(run.job.rundir.path / saved)
        self._down.generator = self._gen
        self._down.version = str(run.state["gen"]["steps"])
        if self._trains(run):
            from flowc.optimizers.weights import trainable_models

            models = trainable_models(run.compiled, self.only, self.frozen)
            self._reader = next(m for m in models if m.param == roles.weights_param)

    def lora_generator(self, base: Path, seed: int) -> Any:
        """The jax generator: a LoRA adapter on the reader's base model (this imports jax)."""
        from flowc.backbone import Backbone
        from flowc.optimizers.poqd.generator import Generator

        return Generator(
            Backbone.load(base),
            rank=self.rank,
            alpha=self.lora_alpha,
            targets=self.targets,
            learning_rate=self.learning_rate,
            seed=seed,
            max_tokens=self.max_sequence,
            micro_batch=self.micro_batch,
        )

    def _downstream(self) -> Downstream:
        assert self._down is not None, "_ensure runs first"
        return self._down

    def _save_generator(self, run: Run) -> None:
        """Save the training state after a step (a new file; the last committed one stays until the
        state that replaces it is checkpointed)."""
        folder = run.job.rundir.path / "generator"
        keep = run.state["gen"]["file"]
        for old in folder.glob("state-*.npz") if folder.is_dir() else ():
            if f"generator/{old.name}" != keep:
                old.unlink()
        steps = self._gen.steps
        name = f"generator/state-{steps:05d}.npz"
        self._gen.save_state(run.job.rundir.path / name)
        run.state["gen"] = {"file": name, "steps": steps}
        down = self._downstream()
        down.version = str(steps)
        down.forget(lambda v: v == down.version)

    def _publish(self, run: Run) -> None:
        """Publish the current adapter as the reader's weights param: filed in the run directory
        under its content hash with its served llama.cpp GGUF (`AdapterStore.publish`, which checks
        it was trained on the reader's base), and kept in the values like an accepted prompt (the
        validation gate at the end judges both). Publishing the same adapter again (a resumed step)
        files nothing new and gives the same value."""
        from flowc.optimizers.weights import AdapterStore

        st = run.state
        assert self._reader is not None, "_ensure runs first, and only a job that trains publishes"
        steps = st["gen"]["steps"]
        store = AdapterStore(run.job.rundir.path)
        scratch = self._gen.save_adapter(
            store.scratch(self._reader, f"step{steps}"), extra={"optimizer": "poqd", "poqd_round": st["round"]}
        )
        served = self._gen.export_adapter(served_path(scratch))
        published = store.publish(self._reader, scratch, served)
        scratch.unlink()
        served.unlink()
        st["adapter"] = {**published.value, "steps": steps}
        st["published_steps"] = steps
        run.log(event="adapter", **st["adapter"])
        losses = [h["loss"] for h in st["losses"]] or [float("nan")]
        note = f"{steps} generator steps; downstream loss {losses[0]:.4f} at the start, {losses[-1]:.4f} last"
        run.keep(
            {self._reader.param: published.value},
            val=None,
            candidate=f"adapter-{steps}",
            rationale={self._reader.param: note},
        )


def _prompt(prefix: str, template: str) -> str:
    """The decomposer prompt: the searched prefix, then the spec's own prompt (the fixed template)."""
    return f"{prefix}\n\n{template}" if prefix else template


def _prefix_id(prefix: str) -> str:
    return "spec" if not prefix else "prefix-" + hashlib.sha256(prefix.encode()).hexdigest()[:8]
