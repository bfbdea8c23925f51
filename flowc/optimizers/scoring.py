"""Scoring a pipeline on examples: the one place optimizers run forward passes and apply the metric.

A Metric maps (outputs of a run, the example) to a number in [0, 1]; `metric_from_spec` and
`metric_by_name` build the usual ones (a registered metric on one output against one dataset field).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.executor import Executor
from flowc.runtime.lm import LMClient
from flowc.runtime.metrics import get_metric
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.tools import ToolRegistry
from flowc.runtime.trace import RunResult


@dataclass(frozen=True)
class Judgement:
    """A metric's verdict on one run: the score, and (when the metric says why) textual feedback,
    which reflective optimizers (GEPA) show their proposer."""

    score: float
    feedback: str = ""


@dataclass(frozen=True)
class Metric:
    """`fn(outputs, example) -> score` (or a `Judgement`, a score with feedback), with a name and a
    sentence saying what it checks."""

    name: str
    fn: Callable[[Mapping[str, Any], Mapping[str, Any]], float | Judgement]
    output: str
    target: str
    description: str = ""

    def __call__(self, outputs: Mapping[str, Any], example: Mapping[str, Any]) -> float:
        return self.judge(outputs, example).score

    def judge(self, outputs: Mapping[str, Any], example: Mapping[str, Any]) -> Judgement:
        """The score and feedback; a metric that gives no feedback gets a sentence comparing the
        output with the target."""
        if self.target not in example:
            raise FlowcError(
                "dataset-invalid",
                f"an example has no field '{self.target}' for metric '{self.name}'",
                hint=f"fields: {', '.join(example)}",
            )
        got = self.fn(outputs, example)
        if isinstance(got, Judgement):
            return got
        score = float(got)
        said = outputs.get(self.output)
        verdict = "right" if score >= 1.0 else "partly right" if score > 0 else "wrong"
        return Judgement(
            score,
            f"{self.name} = {score:.2f} ({verdict}): the output '{self.output}' was {said!r}, "
            f"the expected answer is {example[self.target]!r}.",
        )


def metric_by_name(name: str, output: str, target: str | None = None) -> Metric:
    m = get_metric(name)
    tgt = target or output
    return Metric(name, lambda outs, ex: m.fn(outs.get(output), ex[tgt]), output, tgt, m.description)


def metric_from_spec(compiled: CompiledPipeline, name: str | None = None) -> Metric:
    """A metric declared in the spec (the first, or the one named)."""
    metrics = compiled.spec.metrics
    if not metrics:
        raise FlowcError(
            "unknown-metric",
            f"pipeline '{compiled.name}' declares no metric",
            hint="pass --metric NAME, or add 'metric em: exact_match(output = answer, target = answer)'",
        )
    key = name or next(iter(metrics))
    if key not in metrics:
        raise FlowcError("unknown-metric", f"no metric '{key}' in the spec", hint=f"metrics: {', '.join(metrics)}")
    decl = metrics[key]
    return metric_by_name(decl.fn, decl.output, decl.target)


@dataclass(frozen=True)
class Scored:
    example: Mapping[str, Any]
    run: RunResult
    score: float


@dataclass(frozen=True)
class Evaluation:
    mean: float
    items: tuple[Scored, ...]

    @property
    def failures(self) -> list[Scored]:
        return [s for s in self.items if s.score < 1.0]


class Scorer:
    """Runs a compiled pipeline on examples with one LM client and scores the results."""

    def __init__(
        self,
        lm: LMClient,
        *,
        tools: ToolRegistry | None = None,
        retrievers: RetrieverPool | None = None,
        concurrency: int = 1,
    ) -> None:
        self.lm = lm
        self.tools = tools
        self.retrievers = retrievers or RetrieverPool()
        self.concurrency = concurrency

    async def evaluate(
        self, compiled: CompiledPipeline, examples: Sequence[Mapping[str, Any]], metric: Metric
    ) -> Evaluation:
        ex = Executor(compiled, lm=self.lm, tools=self.tools, retrievers=self.retrievers)
        names = list(compiled.spec.inputs)
        runs = await ex.run_batch([{k: e[k] for k in names if k in e} for e in examples], concurrency=self.concurrency)
        items = []
        for example, run in zip(examples, runs, strict=True):
            if run.status != "ok" and run.error_code == "budget-exceeded":
                from flowc.optimizers.budget import BudgetExceeded

                message = run.error or "budget spent during evaluation"
                raise BudgetExceeded(BudgetExceeded.axis_of(message), message)
            score = metric(run.outputs, example) if run.status == "ok" else 0.0
            items.append(Scored(example, run, score))
        mean = statistics.fmean(s.score for s in items) if items else 0.0
        return Evaluation(mean, tuple(items))


def size(value: Any) -> int:
    """The length of a param value: characters of a prompt, of the JSON of demos."""
    return len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False, default=str))


def growth(before: Mapping[str, Any], after: Mapping[str, Any]) -> int:
    """How much longer `after` makes the params it sets than `before` (negative: shorter)."""
    return sum(size(v) - size(before.get(k, "")) for k, v in after.items())


def accept(new: float, old: float, *, growth: float = 0.0) -> bool:
    """The validation gate shared by every method that uses one.

    An update is kept if the validation score rises, or if it stays the same and the update does
    not make the trained values longer (`growth`, in characters). The papers' gate is `new >= old`;
    on the small validation sets flowc runs with, most updates tie, and `>=` then keeps every edit
    that adds text without helping (the same hint appended step after step). A tie is still kept
    when the edit rewords or shortens."""
    if new > old and not math.isclose(new, old, abs_tol=1e-12):
        return True
    return math.isclose(new, old, abs_tol=1e-12) and growth <= 0
