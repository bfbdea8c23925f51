"""GEPA (Agrawal et al., 2025) natively, through the `gepa` package: `flowc optimize SPEC -O gepa`.

gepa evolves the pipeline's prompts (and system prompts): it runs a candidate on a minibatch of
training examples with traces, asks the reflection model for a better text of one component from
that component's reflective dataset — what its node saw and answered in each example, with the
metric's feedback (`Metric.judge`: a metric may return a score with a feedback string) — keeps the
new candidate if the minibatch improves, and scores it on the validation set. Candidates are chosen
from the Pareto frontier over validation examples (a candidate best on some example stays in play).

The adapter (adapter.py) evaluates with flowc's executor through the job's metered, journaled
clients; the reflection model is the optimizer client. The result is the best candidate on the
validation set, kept only if it does not score below the pipeline as it was (flowc's gate).

Budget: gepa's own `max_metric_calls` bounds examples evaluated; flowc's `--budget-*` bounds calls,
tokens, dollars and time at the client: when it runs out the job stops with the best candidate
evaluated on the whole validation set so far. Resume: the baseline is a checkpointed step; the
gepa run is replayed from the start with the same seed, the journal answering every call the
interrupted run had made (gepa's own pickled run_dir state is not used), so a resumed job ends where
the uninterrupted one would and pays for no call twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.base import trainable_params
from flowc.optimizers.budget import BudgetExceeded
from flowc.optimizers.gepa.adapter import Evaluated, FlowcGEPAAdapter, Trace, pareto_front
from flowc.optimizers.scoring import accept
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.lm import LMClient, LMRequest, Message

#: What flowc adds to gepa's own reflection prompt: the texts it evolves are templates.
TEMPLATE_NOTE = (
    "The instruction is a template: each {{name}} placeholder is replaced by the input of that name. "
    "Keep the placeholders the current instruction has (an input whose placeholder is missing is "
    "appended at the end)."
)


def reflection_template() -> str:
    """gepa's default reflection prompt with TEMPLATE_NOTE before its last request."""
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    base = InstructionProposalSignature.default_prompt_template
    marker = "Provide the new instructions"
    if marker not in base:
        return base + "\n\n" + TEMPLATE_NOTE
    return base.replace(marker, TEMPLATE_NOTE + "\n\n" + marker, 1)


@dataclass(kw_only=True)
class GEPA(StepOptimizer):
    """Args:
    optimizer_lm / optimizer_model: the reflection model's client and id.
    max_metric_calls: examples gepa may evaluate in all (its own budget).
    minibatch: training examples per reflection.
    components: which param kinds evolve (prompt, system).
    """

    optimizer_lm: LMClient | None = None
    optimizer_model: str | None = None
    max_metric_calls: int = 60
    minibatch: int = 3
    components: tuple[str, ...] = ("prompt",)

    name: ClassVar[str] = "gepa"

    def select_params(self, compiled: CompiledPipeline) -> list[str]:
        params = trainable_params(compiled, self.only, self.frozen, kinds=self.components)
        if not params:
            raise FlowcError(
                "invalid-value",
                f"pipeline '{compiled.name}' has no trainable {'/'.join(self.components)} param for gepa",
                hint="mark an llm node 'trainable: true', or check --only/--freeze and --set components=...",
            )
        return params

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "gepa evaluations (max_metric_calls)": (0, self.max_metric_calls * worst),
            "reflections": (0, self.max_metric_calls // max(1, self.minibatch)),
        }

    def _reflection(self, loop: asyncio.AbstractEventLoop, client: LMClient, model: str) -> Any:
        def reflect(prompt: str | list[dict[str, Any]]) -> str:
            if isinstance(prompt, str):
                msgs: tuple[Message, ...] = (Message(role="user", content=prompt),)
            else:
                msgs = tuple(Message(role=m["role"], content=str(m["content"])) for m in prompt)
            request = LMRequest(model=model, messages=msgs, temperature=1.0, node="gepa.reflection")
            return asyncio.run_coroutine_threadsafe(client.complete(request), loop).result().text

        return reflect

    # -- the job: baseline (per validation example), one gepa step, the gate -----------------------

    async def start(self, run: Run) -> None:
        ev = await run.evaluate(run.compiled, run.valset)
        run.state["val_scores"] = [s.score for s in ev.items]
        run.state["val_base"] = run.state["val_best"] = ev.mean

    def finished(self, run: Run) -> bool:
        return bool(run.state.get("done")) and not run.state.get("stop_axis")

    def max_steps(self) -> int | None:
        return 1

    def extra_scores(self, state: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(state[k]) for k in ("candidates", "pareto") if k in state}

    async def step(self, run: Run) -> StepReport:
        if run.state.get("stop_axis"):  # the gepa step ran out of budget and kept its best: stop here
            axis = str(run.state["stop_axis"])
            raise BudgetExceeded(axis, f"the {axis} budget ran out during the gepa run")
        import gepa

        seed = {p: str(run.compiled.params[p].value) for p in run.params}
        loop = asyncio.get_running_loop()
        adapter = FlowcGEPAAdapter(run.compiled, run.job, run.metric, loop, list(run.valset))
        baseline = [Trace(ex, None, s, "") for ex, s in zip(run.valset, run.state["val_scores"], strict=True)]
        adapter.seed_memo(seed, list(run.valset), baseline)  # gepa scores the seed: known already
        adapter.evaluated.append(Evaluated(seed, list(run.state["val_scores"])))
        model = self.optimizer_model or next(iter(run.compiled.spec.models.values())).id
        try:
            await asyncio.to_thread(
                gepa.optimize,
                seed_candidate=seed,
                trainset=list(run.trainset),
                valset=list(run.valset),
                adapter=adapter,
                reflection_lm=self._reflection(loop, run.job.optimizer_lm, model),
                reflection_prompt_template=reflection_template(),
                candidate_selection_strategy="pareto",
                reflection_minibatch_size=self.minibatch,
                max_metric_calls=self.max_metric_calls,
                seed=run.seed,
                raise_on_exception=True,
                display_progress_bar=False,
            )
        except BudgetExceeded as e:
            run.state["stop_axis"] = e.axis  # keep the best so far; the next step stops the job
        run.state["done"] = True
        return self._settle(run, adapter, seed)

    def _settle(self, run: Run, adapter: FlowcGEPAAdapter, seed: dict[str, str]) -> StepReport:
        """Log every candidate scored on the validation set (with the frontier) and keep the best."""
        evaluated = adapter.evaluated
        front = set(pareto_front(evaluated))
        base = evaluated[0].mean
        best = max(range(len(evaluated)), key=lambda i: (evaluated[i].mean, -i))
        kept = best > 0 and accept(evaluated[best].mean, base)
        for i, e in enumerate(evaluated):
            run.candidate(
                id=f"g{i}",
                parent=None if i == 0 else "g0",
                params=sorted(k for k, v in e.candidate.items() if seed.get(k) != v),
                scores={"val": e.mean, "per_example": e.scores},
                pareto=i in front,
                accepted=kept and i == best,
            )
        run.state["candidates"], run.state["pareto"] = len(evaluated), len(front)
        if not kept:
            return StepReport(val=base, accepted=None if len(evaluated) == 1 else False, phase="gepa")
        run.state["updates"] += 1
        values = adapter.params(evaluated[best].candidate)
        why = f"GEPA: best of {len(evaluated)} candidates on the validation set ({len(front)} on the Pareto frontier)"
        run.keep(
            values, val=evaluated[best].mean, candidate=f"g{best}", parent="g0", rationale=dict.fromkeys(values, why)
        )
        return StepReport(val=evaluated[best].mean, accepted=True, phase="gepa")
