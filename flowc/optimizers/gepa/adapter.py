"""flowc as a `gepa` adapter (gepa.core.adapter.GEPAAdapter): a candidate is a text per component
(a param: `plan.prompt`, `plan.system`), evaluated by running the patched pipeline with flowc's
executor; the reflective dataset of a component is built from flowc's traces of its node.

gepa calls the adapter synchronously (from the thread the optimizer runs it in); runs go to the
job's event loop, where its metered, journaled clients live.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError, SpecErrors
from flowc.interop.templates import prompt_from_instructions
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric
from flowc.runtime.trace import RunResult
from flowc.spec.models import LLMNode, MapNode
from flowc.spec.template import TemplateError

Row = Mapping[str, Any]


@dataclass
class Trace:
    """One example's run under one candidate: what gepa's reflection needs about it."""

    example: Row
    run: RunResult | None
    score: float
    feedback: str


@dataclass
class Evaluated:
    """A candidate scored on the whole validation set (one point of the Pareto frontier)."""

    candidate: dict[str, str]
    scores: list[float]

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def pareto_front(evaluated: Sequence[Evaluated]) -> list[int]:
    """Indices of the candidates no other beats on every validation example (and ties nowhere worse)."""
    front = []
    for i, a in enumerate(evaluated):
        dominated = any(
            all(y >= x for x, y in zip(a.scores, b.scores, strict=True)) and b.scores != a.scores
            for j, b in enumerate(evaluated)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _shown(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


@dataclass
class FlowcGEPAAdapter:
    compiled: CompiledPipeline
    job: Job
    metric: Metric
    loop: asyncio.AbstractEventLoop
    valset: Sequence[Row]
    memo: dict[str, Trace] = field(default_factory=dict)
    evaluated: list[Evaluated] = field(default_factory=list)
    propose_new_texts: Any = None  # gepa's default proposer (its reflection LM) writes new texts

    # -- candidates ----------------------------------------------------------------------------------

    def params(self, candidate: Mapping[str, str]) -> dict[str, str]:
        """A candidate as flowc params: a prompt that dropped placeholders gets its inputs appended."""
        out = {}
        for name, text in candidate.items():
            node, _, kind = name.rpartition(".")
            if kind == "prompt":
                spec = self.compiled.spec.nodes[node]
                llm = spec.body if isinstance(spec, MapNode) else spec
                assert isinstance(llm, LLMNode)
                text = prompt_from_instructions(text, list(llm.inputs))
            out[name] = text
        return out

    def _key(self, candidate: Mapping[str, str], example: Row) -> str:
        return json.dumps([candidate, example], sort_keys=True, ensure_ascii=False, default=str)

    def seed_memo(self, candidate: Mapping[str, str], examples: Sequence[Row], traces: Sequence[Trace]) -> None:
        for ex, tr in zip(examples, traces, strict=True):
            self.memo[self._key(candidate, ex)] = tr

    async def run(self, candidate: Mapping[str, str], batch: Sequence[Row]) -> list[Trace]:
        """Each example's trace under `candidate` (runs already made are not made again)."""
        todo = [ex for ex in batch if self._key(candidate, ex) not in self.memo]
        if todo:
            try:
                patched = self.compiled.with_params(self.params(candidate))
            except (TemplateError, SpecErrors, FlowcError) as e:
                why = f"this candidate is not a valid flowc prompt: {e}"
                for ex in todo:
                    self.memo[self._key(candidate, ex)] = Trace(ex, None, 0.0, why)
            else:
                ev = await self.job.scorer.evaluate(patched, todo, self.metric)
                for item in ev.items:
                    if item.run.status == "ok":
                        verdict = self.metric.judge(item.run.outputs, item.example)
                        trace = Trace(item.example, item.run, verdict.score, verdict.feedback)
                    else:
                        trace = Trace(item.example, item.run, 0.0, f"the run failed: {item.run.error}")
                    self.memo[self._key(candidate, item.example)] = trace
        return [self.memo[self._key(candidate, ex)] for ex in batch]

    # -- the GEPAAdapter protocol --------------------------------------------------------------------

    def evaluate(self, batch: list[Row], candidate: dict[str, str], capture_traces: bool = False) -> Any:
        from gepa.core.adapter import EvaluationBatch

        traces = asyncio.run_coroutine_threadsafe(self.run(candidate, batch), self.loop).result()
        scores = [t.score for t in traces]
        on_val = list(batch) == list(self.valset)  # a point for the frontier
        if on_val and not any(e.candidate == candidate for e in self.evaluated):
            self.evaluated.append(Evaluated(dict(candidate), scores))
        return EvaluationBatch(
            outputs=[t.run.outputs if t.run else {} for t in traces],
            scores=scores,
            trajectories=traces if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Per component, what its node saw and answered in each example, with the metric's feedback."""
        out: dict[str, list[dict[str, Any]]] = {}
        for comp in components_to_update:
            node = comp.rpartition(".")[0]
            records = []
            for t in eval_batch.trajectories or []:
                steps = [s for s in (t.run.steps if t.run else []) if s.node == node]
                if t.run is None or not steps:
                    records.append(
                        {
                            "Inputs": {k: _shown(v) for k, v in t.example.items()},
                            "Generated Outputs": f"(node '{node}' did not run)",
                            "Feedback": t.feedback,
                        }
                    )
                    continue
                for s in steps:
                    records.append(
                        {
                            "Inputs": {k: _shown(v) for k, v in s.inputs.items()},
                            "Generated Outputs": {k: _shown(v) for k, v in s.outputs.items()}
                            if s.status == "ok"
                            else f"error: {s.error}",
                            "Feedback": f"{t.feedback} (the pipeline's outputs: {_shown(t.run.outputs)})",
                        }
                    )
            out[comp] = records
        return out
