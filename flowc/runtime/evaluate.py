"""Evaluate a pipeline on a dataset: bounded concurrency, a checkpoint per example, resumable.

Results are appended to `<dir>/results.jsonl` (one line per finished example, flushed and fsynced),
so a killed evaluation continued with `resume=True` skips every example already done and repeats no
model call; the summary and report are computed from that file. A row records the artifact hash of
the pipeline that produced it: after the spec changes, a resume runs those examples again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.executor import Executor
from flowc.runtime.metrics import Metric, get_metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricBinding:
    """A metric applied to one pipeline output against one dataset field."""

    name: str
    metric: Metric
    output: str
    target: str


def load_dataset(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records from a JSONL file (or a JSON list); each gets an `id` if it has none."""
    p = Path(path)
    if not p.is_file():
        raise FlowcError("dataset-invalid", f"no dataset file at '{path}'", hint="pass a .jsonl file with --data")
    text = p.read_text(encoding="utf-8")
    records: list[dict[str, Any]] = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FlowcError("dataset-invalid", f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        records = [r for r in data if isinstance(r, dict)]
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FlowcError(
                    "dataset-invalid", f"{path}:{i}: not valid JSON ({e.msg})", hint="one JSON object per line"
                ) from None
            if not isinstance(rec, dict):
                raise FlowcError("dataset-invalid", f"{path}:{i}: expected a JSON object per line")
            records.append(rec)
    for i, r in enumerate(records):
        r.setdefault("id", str(i))
    return records[:limit] if limit else records


def bind_metrics(
    spec_metrics: Mapping[str, Any], names: Iterable[str], output: str | None, target: str | None, default_output: str
) -> list[MetricBinding]:
    """Metrics named on the command line (applied to `output` vs `target`), else those of the spec."""
    names = list(names)
    if names:
        out = output or default_output
        return [MetricBinding(n, get_metric(n), out, target or out) for n in names]
    return [
        MetricBinding(n, get_metric(m.fn), m.output, m.target) for n, m in spec_metrics.items() if m.fn != "llm_judge"
    ]


def _inputs_of(record: Mapping[str, Any], input_names: Iterable[str]) -> dict[str, Any]:
    return {k: record[k] for k in input_names if k in record}


async def evaluate(
    executor: Executor,
    records: list[dict[str, Any]],
    metrics: list[MetricBinding],
    out_dir: Path,
    *,
    concurrency: int = 4,
    resume: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every record, score it, checkpoint it; returns the report (also written to report.json)."""
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
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
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if resume and results_path.exists():
        stale = 0
        for line in results_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that example runs again
            if not isinstance(row, dict) or "id" not in row:
                continue
            if row.get("artifact_hash", executor.compiled.hash) != executor.compiled.hash:
                stale += 1  # scored by another version of the pipeline (prompts, models changed)
                continue
            done[str(row["id"])] = row
        if stale:
            log.warning(
                "%d result(s) in %s came from another version of the pipeline; running them again", stale, results_path
            )
        # Keep only the complete rows: a line cut by a kill has no newline, and the next row
        # appended after it would be glued to it and lost to the resume after this one.
        tmp = results_path.with_suffix(".jsonl.tmp")
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False, default=repr) + "\n" for r in done.values()), encoding="utf-8"
        )
        os.replace(tmp, results_path)
    elif results_path.exists():
        results_path.unlink()
    todo = [r for r in records if str(r["id"]) not in done]
    input_names = list(executor.compiled.spec.inputs)
    sem = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    finished = len(records) - len(todo)
    if on_progress:
        on_progress(finished, len(records))
    with results_path.open("a", encoding="utf-8") as fh:

        async def one(rec: dict[str, Any]) -> None:
            nonlocal finished
            async with sem:
                result = await executor.run(_inputs_of(rec, input_names))
            scores = {}
            for mb in metrics:
                if result.status == "ok" and mb.target in rec:
                    scores[mb.name] = _score(mb, result.outputs.get(mb.output), rec)
                else:
                    scores[mb.name] = 0.0
            row: dict[str, Any] = {
                "id": str(rec["id"]),
                "run_id": result.run_id,
                "artifact_hash": result.artifact_hash,
                "status": result.status,
                "error": result.error,
                "outputs": result.outputs,
                "scores": scores,
                "duration_s": result.duration_s,
                "tokens": result.tokens,
                "lm_calls": len(result.lm_calls),
                "cost_usd": result.cost_usd,
                "cached_calls": sum(c.cached for c in result.lm_calls),
            }
            async with lock:
                fh.write(json.dumps(row, ensure_ascii=False, default=repr) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                done[row["id"]] = row
                finished += 1
                if on_progress:
                    on_progress(finished, len(records))

        await asyncio.gather(*(one(r) for r in todo))
    rows = [done[str(r["id"])] for r in records if str(r["id"]) in done]
    report = summarize(rows, metrics)
    report["pipeline"] = executor.compiled.name
    report["artifact_hash"] = executor.compiled.hash
    (out_dir / "report.json").write_text(
        json.dumps({**report, "examples": rows}, indent=2, ensure_ascii=False, default=repr) + "\n", encoding="utf-8"
    )
    return report


def _score(mb: MetricBinding, prediction: Any, rec: Mapping[str, Any]) -> float:
    try:
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


def summarize(rows: list[dict[str, Any]], metrics: list[MetricBinding]) -> dict[str, Any]:
    n = len(rows)
    durations = [r["duration_s"] for r in rows] or [0.0]
    return {
        "examples": n,
        "errors": sum(r["status"] != "ok" for r in rows),
        "metrics": {m.name: (sum(r["scores"].get(m.name, 0.0) for r in rows) / n if n else 0.0) for m in metrics},
        "lm_calls": sum(r["lm_calls"] for r in rows),
        "cached_calls": sum(r.get("cached_calls", 0) for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "cost_usd": sum(r["cost_usd"] for r in rows),
        "seconds_per_example": statistics.fmean(durations),
        "seconds_total": sum(durations),
        "finished_at": time.time(),
    }
