"""The run store: every run, every step's inputs and outputs, every LM call, in one SQLite file.

Each step is committed as soon as it completes (WAL journal), so a crash or a kill loses no finished
work and a half-finished run stays inspectable (`flowc trace RUN_ID` shows it as 'running').
Requests are stored in canonical form: they hold prompts and settings, never API keys.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.trace import LMCallRecord, RunResult, StepRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, artifact_hash TEXT NOT NULL, started REAL NOT NULL,
  finished REAL, status TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT, error TEXT, error_code TEXT,
  duration_s REAL, tokens INTEGER, cost_usd REAL, lm_calls INTEGER
);
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, iteration INTEGER,
  inputs TEXT, outputs TEXT, status TEXT, error TEXT, note TEXT, started_s REAL, duration_s REAL,
  PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS lm_calls (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL, node TEXT, model TEXT, request TEXT,
  response TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, latency_s REAL,
  cached INTEGER, error TEXT, PRIMARY KEY (run_id, seq, idx)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


class RunStore:
    """A SQLite run store; safe to use from one process's threads and asyncio tasks."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # -- writing -----------------------------------------------------------------------------------

    def begin_run(self, run: RunResult) -> None:
        self._exec(
            "INSERT OR REPLACE INTO runs (id, pipeline, artifact_hash, started, status, inputs) "
            "VALUES (?, ?, ?, ?, 'running', ?)",
            (run.run_id, run.pipeline, run.artifact_hash, time.time(), _dumps(run.inputs)),
        )

    def add_step(self, run_id: str, step: StepRecord) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    step.seq,
                    step.node,
                    step.kind,
                    step.iteration,
                    _dumps(step.inputs),
                    _dumps(step.outputs),
                    step.status,
                    step.error,
                    step.note,
                    step.started_s,
                    step.duration_s,
                ),
            )
            for i, c in enumerate(step.lm_calls):
                self._db.execute(
                    "INSERT OR REPLACE INTO lm_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        step.seq,
                        i,
                        c.node,
                        c.model,
                        _dumps(c.request),
                        c.response,
                        c.prompt_tokens,
                        c.completion_tokens,
                        c.cost_usd,
                        c.latency_s,
                        int(c.cached),
                        c.error,
                    ),
                )
            self._db.execute("COMMIT")

    def end_run(self, run: RunResult) -> None:
        calls = run.lm_calls
        self._exec(
            "UPDATE runs SET finished=?, status=?, outputs=?, error=?, error_code=?, duration_s=?, tokens=?, "
            "cost_usd=?, lm_calls=? WHERE id=?",
            (
                time.time(),
                run.status,
                _dumps(run.outputs),
                run.error,
                run.error_code,
                run.duration_s,
                run.tokens,
                run.cost_usd,
                len(calls),
                run.run_id,
            ),
        )

    # -- reading -----------------------------------------------------------------------------------

    def list_runs(self, limit: int = 20, pipeline: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, pipeline, started, status, duration_s, tokens, cost_usd, lm_calls, error_code FROM runs"
        args: tuple[Any, ...] = ()
        if pipeline:
            sql += " WHERE pipeline=?"
            args = (pipeline,)
        sql += " ORDER BY started DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        keys = ("id", "pipeline", "started", "status", "duration_s", "tokens", "cost_usd", "lm_calls", "error_code")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def load(self, run_id: str) -> RunResult:
        """A stored run with its steps and LM calls; a unique prefix of the id is enough."""
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pipeline, artifact_hash, status, inputs, outputs, error, error_code, "
                "duration_s FROM runs WHERE id LIKE ? ESCAPE '\\'",
                (pattern,),
            ).fetchall()
        exact = [r for r in rows if r[0] == run_id]
        rows = exact or rows  # an id that is also a prefix of longer ids still names its own run
        if len(rows) != 1:
            raise FlowcError(
                "run-not-found",
                f"no run '{run_id}' in {self.path}" if not rows else f"'{run_id}' matches {len(rows)} runs",
                hint="list runs with 'flowc runs'",
            )
        rid, pipeline, art, status, inputs, outputs, error, code, dur = rows[0]
        run = RunResult(
            run_id=rid,
            pipeline=pipeline,
            artifact_hash=art,
            inputs=json.loads(inputs),
            outputs=json.loads(outputs) if outputs else {},
            status=status if status in ("error", "running") else "ok",
            error=error,
            error_code=code,
            duration_s=dur or 0.0,
        )
        with self._lock:
            steps = self._db.execute(
                "SELECT seq, node, kind, iteration, inputs, outputs, status, error, note, "
                "started_s, duration_s FROM steps WHERE run_id=? ORDER BY seq",
                (rid,),
            ).fetchall()
            calls = self._db.execute(
                "SELECT seq, node, model, request, response, prompt_tokens, completion_tokens, "
                "cost_usd, latency_s, cached, error FROM lm_calls WHERE run_id=? "
                "ORDER BY seq, idx",
                (rid,),
            ).fetchall()
        by_seq: dict[int, list[LMCallRecord]] = {}
        for seq, node, model, req, resp, pt, ct, cost, lat, cached, err in calls:
            by_seq.setdefault(seq, []).append(
                LMCallRecord(
                    node=node,
                    model=model,
                    request=json.loads(req),
                    response=resp,
                    prompt_tokens=pt,
                    completion_tokens=ct,
                    cost_usd=cost,
                    latency_s=lat,
                    cached=bool(cached),
                    error=err,
                )
            )
        for seq, node, kind, it, ins, outs, st, err, note, start, dur in steps:
            run.steps.append(
                StepRecord(
                    seq=seq,
                    node=node,
                    kind=kind,
                    iteration=it,
                    inputs=json.loads(ins),
                    outputs=json.loads(outs),
                    status=st,
                    error=err,
                    note=note,
                    started_s=start,
                    duration_s=dur,
                    lm_calls=by_seq.get(seq, []),
                )
            )
        return run

    def status_of(self, run_id: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
        return str(row[0]) if row else "missing"


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, default=repr)
