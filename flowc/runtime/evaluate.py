"""Evaluate a pipeline on a dataset: bounded concurrency, a checkpoint per example, resumable.

The unit of work is explicit, so another executor (a Ray pool) can drive the same loop:

- `ExampleRunner.run(record) -> row` runs one example and scores it (never raises for a failure
  of the pipeline or of a judge: the row says status 'error' with the code);
- `Checkpoint.record(row)` appends it to `<dir>/results.jsonl` (flushed and fsynced) — from then on
  the example counts as done;
- `evaluate()` is the asyncio driver: it reads the checkpoint, runs what is left with N workers,
  stops early under `StopPolicy`, and writes the report.

A killed evaluation continued with `resume=True` skips every example already done and repeats no
model call for it; examples that failed are run again (their earlier error is kept in the row's
`previous_errors`). A row records the artifact hash of the pipeline that produced it: after the spec
changes, a resume runs those examples again. The report gives each metric twice: with failed
examples counted as 0 (`metrics`) and over the examples that ran (`metrics_ok`).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime import evaldir
from flowc.runtime.datasets import inputs_of, load_dataset
from flowc.runtime.executor import Executor
from flowc.runtime.judge import LLMJudge
from flowc.runtime.metrics import Metric, get_metric
from flowc.runtime.trace import RunResult

__all__ = [
    "Checkpoint",
    "ExampleRunner",
    "MetricBinding",
    "StopPolicy",
    "bind_metrics",
    "evaluate",
    "load_dataset",
    "summarize",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, "dict[str, Any] | None"], None]


@dataclass(frozen=True)
class MetricBinding:
    """A metric applied to one pipeline output against one dataset field: a function (`metric`),
    or a model (`judge`, for llm_judge)."""

    name: str
    metric: Metric | None
    output: str
    target: str
    judge: LLMJudge | None = None
    with_example: bool = False  # the function also takes the whole dataset record

    def __post_init__(self) -> None:
        if (self.metric is None) == (self.judge is None):
            raise ValueError("a MetricBinding has a metric function or a judge, not both or neither")


def bind_metrics(
    spec_metrics: Mapping[str, Any],
    names: Iterable[str],
    output: str | None,
    target: str | None,
    default_output: str,
    *,
    judge_of: Callable[[str, str | None], LLMJudge] | None = None,
) -> list[MetricBinding]:
    """Metrics named on the command line (applied to `output` vs `target`), else those of the spec.

    `llm_judge` metrics of the spec are bound to their judge through `judge_of(metric, model)`;
    without it they are refused (never dropped: a score that leaves out a metric is a wrong score).
    """
    from flowc.runtime.custom_metrics import is_custom, load_custom_metric

    names = list(names)
    if names:
        out = output or default_output
        bound = []
        for n in names:
            if n == "llm_judge":
                raise FlowcError(
                    "unknown-metric",
                    "llm_judge needs a judge model, which only a spec can declare",
                    hint="declare it in the spec: metric graded: llm_judge(output = ..., target = ..., model = NAME)",
                )
            if is_custom(n):
                fn, with_example = load_custom_metric(n)
                bound.append(MetricBinding(n, fn, out, target or out, with_example=with_example))
            else:
                bound.append(MetricBinding(n, get_metric(n), out, target or out))
        return bound
    bound = []
    for n, m in spec_metrics.items():
        if m.fn == "llm_judge":
            if judge_of is None:
                raise FlowcError(
                    "unknown-metric",
                    f"metric '{n}' is an llm_judge, and no model client was given to judge with",
                    hint="evaluate through flowc eval (or pass judge_of=...)",
                )
            bound.append(MetricBinding(n, None, m.output, m.target, judge=judge_of(n, m.model)))
        else:
            bound.append(MetricBinding(n, get_metric(m.fn), m.output, m.target))
    return bound


@dataclass
class StopPolicy:
    """When to stop early: once more than `max_errors` examples failed, if `fail_fast`."""

    max_errors: int = 0
    fail_fast: bool = False

    def should_stop(self, errors: int) -> bool:
        return self.fail_fast and errors > self.max_errors


class ExampleRunner:
    """Runs one example through the pipeline and scores it into a result row."""

    def __init__(self, executor: Executor, metrics: list[MetricBinding]) -> None:
        self.executor = executor
        self.metrics = metrics
        self.input_names = list(executor.compiled.spec.inputs)

    async def run(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The example's row. A failure of the pipeline or of a judge is a row with status
        'error'; a metric function that raises is a mistake of the setup and raises."""
        inputs = inputs_of(record, self.input_names)
        result = await self.executor.run(inputs)
        row = self._row(record, inputs, result)
        if result.status == "ok":
            await self._score(row, record, result)
        if row["status"] != "ok":
            row["scores"] = {mb.name: 0.0 for mb in self.metrics}
        return row

    def _row(self, record: Mapping[str, Any], inputs: dict[str, Any], result: RunResult) -> dict[str, Any]:
        calls = result.lm_calls
        return {
            "id": str(record["id"]),
            "run_id": result.run_id,
            "artifact_hash": result.artifact_hash,
            "status": result.status,
            "error": result.error,
            "error_code": result.error_code,
            "inputs": inputs,
            "expected": {mb.target: record[mb.target] for mb in self.metrics if mb.target in record},
            "outputs": result.outputs,
            "scores": {},
            "duration_s": result.duration_s,
            "tokens": result.tokens,
            "lm_calls": len(calls),
            "retries": result.retries,
            "cost_usd": result.cost_usd,
            "cached_calls": sum(c.cached for c in calls),
        }

    async def _score(self, row: dict[str, Any], record: Mapping[str, Any], result: RunResult) -> None:
        for mb in self.metrics:
            if mb.target not in record:
                row["scores"][mb.name] = 0.0
                continue
            prediction = result.outputs.get(mb.output)
            if mb.judge is not None:
                try:
                    verdict = await mb.judge.score(prediction, record[mb.target], row["inputs"])
                except FlowcError as e:  # the judge failed on this example: not scored, and says why
                    row.update(status="error", error=str(e), error_code=e.code)
                    return
                row["scores"][mb.name] = verdict.score
                row.setdefault("judge", {})[mb.name] = {"reply": verdict.reply, "cached": verdict.cached}
                row["tokens"] += verdict.tokens
                row["cost_usd"] += verdict.cost_usd
                row["lm_calls"] += 1
                row["cached_calls"] += int(verdict.cached)
            else:
                row["scores"][mb.name] = _score(mb, prediction, record)


def _score(mb: MetricBinding, prediction: Any, rec: Mapping[str, Any]) -> float:
    assert mb.metric is not None
    try:
        if mb.with_example:
            return float(mb.metric.fn(prediction, rec[mb.target], rec))  # type: ignore[call-arg]
        return float(mb.metric.fn(prediction, rec[mb.target]))
    except FlowcError:
        raise
    except Exception as e:  # a metric that cannot take this output: say where, not a traceback
        raise FlowcError(
            "invalid-value",
            f"metric '{mb.name}' failed on example '{rec['id']}' ({type(e).__name__}: {e}); "
            f"output '{mb.output}' was {prediction!r:.80}",
            hint="check that the metric suits the output's type (e.g. hit@k needs a list)",
        ) from e


@dataclass
class Checkpoint:
    """The finished examples of one evaluation folder, and the writer that adds to them."""

    path: Path
    artifact_hash: str
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    # id -> the errors of its earlier failed runs (it runs again; the new row keeps them)
    retry_errors: dict[str, list[str]] = field(default_factory=dict)
    _writer: evaldir.ResultsWriter | None = None

    def open(self, *, resume: bool) -> None:
        """Load the finished rows (on resume) and start appending. Rows of failed examples and of
        another version of the pipeline are not done: they run again."""
        if not resume:
            (self.path / evaldir.RESULTS).unlink(missing_ok=True)
        previous = evaldir.read_rows(self.path) if resume else []
        stale = 0
        for row in previous:
            if row.get("artifact_hash", self.artifact_hash) != self.artifact_hash:
                stale += 1  # scored by another version of the pipeline (prompts, models changed)
            elif row.get("status") != "ok":
                self.retry_errors[str(row["id"])] = [*row.get("previous_errors", []), str(row.get("error"))]
            else:
                self.done[str(row["id"])] = row
        if stale:
            log.warning(
                "%d result(s) in %s came from another version of the pipeline; running them again", stale, self.path
            )
        if resume:
            # Keep only the rows that count: a line cut by a kill has no newline, and the next row
            # appended after it would be glued to it and lost to the resume after this one.
            evaldir.rewrite_rows(self.path, list(self.done.values()))
        self._writer = evaldir.ResultsWriter(self.path)

    def record(self, row: dict[str, Any]) -> None:
        """Make a finished example durable; from here on it counts as done."""
        previous = self.retry_errors.get(row["id"])
        if previous:
            row["previous_errors"] = previous
        assert self._writer is not None, "Checkpoint.open() first"
        self._writer.append(row)
        self.done[row["id"]] = row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def check_bindings(executor: Executor, records: list[dict[str, Any]], metrics: list[MetricBinding]) -> None:
    """Refuse, before running anything, ids that repeat and metrics bound to nothing."""
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        counts = Counter(ids)
        dupes = sorted(i for i, n in counts.items() if n > 1)
        raise FlowcError(
            "dataset-invalid",
            f"example ids must be unique (they key the checkpoint); repeated: {', '.join(dupes[:5])}",
            hint="give every record its own 'id', or drop the field to number them",
        )
    outputs = executor.compiled.spec.outputs
    for mb in metrics:
        if mb.output not in outputs:
            raise FlowcError(
                "unknown-port",
                f"metric '{mb.name}' scores output '{mb.output}', which '{executor.compiled.name}' does not have",
                hint=f"outputs: {', '.join(outputs)}",
            )
        if records and not any(mb.target in r for r in records):
            raise FlowcError(
                "dataset-invalid",
                f"metric '{mb.name}' compares with field '{mb.target}', which no record has",
                hint=f"fields: {', '.join(sorted({k for r in records for k in r}))}; pick one with --target",
            )


async def evaluate(
    executor: Executor,
    records: list[dict[str, Any]],
    metrics: list[MetricBinding],
    out_dir: Path,
    *,
    concurrency: int = 4,
    resume: bool = False,
    on_progress: Progress | None = None,
    stop: StopPolicy | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every record, score it, checkpoint it; returns the report (also written to report.json).

    Holds the folder's lock while it runs (a second writer gets `run-locked`)."""
    check_bindings(executor, records, metrics)
    with evaldir.locked(out_dir):
        if meta is not None:
            evaldir.write_json(out_dir / evaldir.META, {**evaldir.read_json(out_dir / evaldir.META), **meta})
        checkpoint = Checkpoint(out_dir, executor.compiled.hash)
        checkpoint.open(resume=resume)
        try:
            stopped = await _drive(
                ExampleRunner(executor, metrics), checkpoint, records, concurrency, on_progress, stop
            )
        finally:
            checkpoint.close()
        rows = [checkpoint.done[str(r["id"])] for r in records if str(r["id"]) in checkpoint.done]
        report = summarize(rows, metrics)
        report.update(
            pipeline=executor.compiled.name,
            artifact_hash=executor.compiled.hash,
            planned=len(records),
            stopped=stopped,
            dir=str(out_dir),
        )
        evaldir.write_json(out_dir / evaldir.REPORT, {**report, "examples": rows})
        return report


async def _drive(
    runner: ExampleRunner,
    checkpoint: Checkpoint,
    records: list[dict[str, Any]],
    concurrency: int,
    on_progress: Progress | None,
    stop: StopPolicy | None,
) -> str | None:
    """N workers take the examples not done yet in order; returns why it stopped early, if it did."""
    todo = [r for r in records if str(r["id"]) not in checkpoint.done]
    total = len(records)
    errors = 0
    stopped: str | None = None
    queue = iter(todo)
    if on_progress:
        on_progress(len(checkpoint.done), total, None)

    async def worker() -> None:
        nonlocal errors, stopped
        for rec in queue:  # one shared iterator: each example goes to exactly one worker
            if stopped:
                return
            row = await runner.run(rec)
            checkpoint.record(row)
            if row["status"] != "ok":
                errors += 1
                if stop is not None and stop.should_stop(errors) and not stopped:
                    stopped = f"{errors} example(s) failed (--fail-fast, --max-errors {stop.max_errors})"
            if on_progress:
                on_progress(len(checkpoint.done), total, row)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo) or 1)))))
    return stopped


def summarize(rows: list[dict[str, Any]], metrics: list[MetricBinding]) -> dict[str, Any]:
    n = len(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    durations = [r["duration_s"] for r in rows] or [0.0]
    failed = [r for r in rows if r["status"] != "ok"]
    return {
        "examples": n,
        "errors": len(failed),
        "metrics": {m.name: _mean(r["scores"].get(m.name, 0.0) for r in rows) for m in metrics},
        # None when no example ran: "no score", not a score of 0
        "metrics_ok": {m.name: (_mean(r["scores"].get(m.name, 0.0) for r in ok) if ok else None) for m in metrics},
        "errors_by_code": dict(Counter(str(r.get("error_code") or "unknown") for r in failed).most_common()),
        "first_errors": [{"id": r["id"], "code": r.get("error_code"), "error": r.get("error")} for r in failed[:5]],
        "lm_calls": sum(r["lm_calls"] for r in rows),
        "cached_calls": sum(r.get("cached_calls", 0) for r in rows),
        "retries": sum(r.get("retries", 0) for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "cost_usd": sum(r["cost_usd"] for r in rows),
        "seconds_per_example": statistics.fmean(durations),
        "seconds_total": sum(durations),
        "finished_at": time.time(),
    }


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0
