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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.base import AsyncOptimizer, ParamPatch, Provenance, trainable_params
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.gepa.adapter import Evaluated, FlowcGEPAAdapter, Trace, pareto_front
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric, accept
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


@dataclass
class GEPA(AsyncOptimizer):
    """Args:
    pipeline_lm / optimizer_lm: the pipeline's client and the reflection model's.
    optimizer_model: the reflection model's id.
    max_metric_calls: examples gepa may evaluate in all (its own budget).
    minibatch: training examples per reflection.
    components: which param kinds evolve (prompt, system).
    """

    pipeline_lm: LMClient
    optimizer_lm: LMClient | None = None
    optimizer_model: str | None = None
    max_metric_calls: int = 60
    minibatch: int = 3
    components: tuple[str, ...] = ("prompt",)
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False

    name: ClassVar[str] = "gepa"

    def settings(self) -> dict[str, Any]:
        return {
            "max_metric_calls": self.max_metric_calls,
            "minibatch": self.minibatch,
            "components": list(self.components),
            "optimizer_model": self.optimizer_model,
            "only": list(self.only or []),
            "frozen": list(self.frozen),
        }

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

    async def optimize_async(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch:
        try:
            import gepa
        except ModuleNotFoundError as e:
            if e.name != "gepa":
                raise
            raise FlowcError(
                "unknown-name", "GEPA needs the 'gepa' package", hint="pip install 'flowc[gepa]'"
            ) from None
        names = trainable_params(compiled, self.only, self.frozen, kinds=self.components)
        job = Job(
            self.name,
            compiled,
            pipeline_lm=self.pipeline_lm,
            optimizer_lm=self.optimizer_lm or self.pipeline_lm,
            budget=budget,
            seed=seed,
            trainset=trainset,
            valset=valset,
            settings=self.settings(),
            run_dir=run_dir,
            resume=self.resume,
        )
        seed_candidate = {n: str(compiled.params[n].value) for n in names}
        loop = asyncio.get_running_loop()
        adapter = FlowcGEPAAdapter(compiled, job, metric, loop, list(valset))
        st: dict[str, Any] = job.state or {"step": 0, "val_scores": None}
        stopped: str | None = None
        model = self.optimizer_model or next(iter(compiled.spec.models.values())).id
        try:
            if st["val_scores"] is None:
                traces = await adapter.run(seed_candidate, list(valset))
                st["val_scores"] = [t.score for t in traces]
                st["step"] = 1
                job.checkpoint(st["step"], st)
            else:  # resumed: the baseline's scores are in the saved state, gepa need not run it again
                adapter.seed_memo(
                    seed_candidate, list(valset), [Trace(ex, None, s, "") for ex, s in zip(valset, st["val_scores"])]
                )
            adapter.evaluated.append(Evaluated(seed_candidate, list(st["val_scores"])))
            if names and trainset:
                await asyncio.to_thread(
                    gepa.optimize,
                    seed_candidate=seed_candidate,
                    trainset=list(trainset),
                    valset=list(valset),
                    adapter=adapter,
                    reflection_lm=self._reflection(loop, job.optimizer_lm, model),
                    reflection_prompt_template=reflection_template(),
                    candidate_selection_strategy="pareto",
                    reflection_minibatch_size=self.minibatch,
                    max_metric_calls=self.max_metric_calls,
                    seed=seed,
                    raise_on_exception=True,
                    display_progress_bar=False,
                )
        except BudgetExceeded as e:
            stopped = f"budget: {e.axis}"
        finally:
            job.close()
        return self._patch(compiled, job, adapter, seed_candidate, st, seed, stopped)

    def _patch(
        self,
        compiled: CompiledPipeline,
        job: Job,
        adapter: FlowcGEPAAdapter,
        seed_candidate: dict[str, str],
        st: dict[str, Any],
        seed: int,
        stopped: str | None,
    ) -> ParamPatch:
        evaluated = adapter.evaluated
        front = set(pareto_front(evaluated))
        before = evaluated[0].mean if evaluated else 0.0
        best = max(range(len(evaluated)), key=lambda i: (evaluated[i].mean, -i)) if evaluated else 0
        for i, e in enumerate(evaluated):
            changed = sorted(k for k, v in e.candidate.items() if seed_candidate.get(k) != v)
            job.candidate(
                step=st["step"] + i,
                id=f"g{i}",
                parent="base" if i else None,
                params=changed,
                scores={"val": e.mean, "per_example": e.scores},
                pareto=i in front,
                accepted=i == best and i > 0 and accept(e.mean, before),
            )
        values: dict[str, Any] = {}
        after = before
        if evaluated and best > 0 and accept(evaluated[best].mean, before):
            after = evaluated[best].mean
            params = adapter.params(evaluated[best].candidate)
            values = {k: v for k, v in params.items() if v != compiled.params[k].value}
        prov = {
            k: Provenance(
                optimizer=self.name,
                step=st["step"],
                candidate=f"g{best}",
                parent="base",
                scores={"val_before": before, "val_after": after},
                rationale=f"GEPA: best of {len(evaluated)} candidates on the validation set "
                f"({len(front)} on the Pareto frontier)",
            )
            for k in values
        }
        return ParamPatch(
            pipeline=compiled.name,
            base_hash=compiled.hash,
            optimizer=self.name,
            seed=seed,
            params=values,
            provenance=prov,
            scores={"val_before": before, "val_after": after},
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )
