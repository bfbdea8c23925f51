"""The run store: every run, every step's inputs and outputs, every LM call, in one SQLite file.

Each step is committed as soon as it completes (WAL journal), so a crash or a kill loses no finished
work and a half-finished run stays inspectable (`flowc trace RUN_ID` shows it as 'running').
Requests are stored in canonical form: they hold prompts and settings, never API keys.

A run records the process that runs it (pid, host, process start time). Opening the store marks
the runs whose process is gone as 'interrupted' (killed, or the machine went down), so a run
stays 'running' only while something is still running it. Every LM call keeps the attempts that
failed before it answered (retries and fallbacks, with their errors).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.attempts import AttemptRecord
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

# Columns added after the first release of the store, added to an older file when it is opened.
_ADDED_COLUMNS = {
    "runs": (("pid", "INTEGER"), ("host", "TEXT"), ("proc_start", "REAL"), ("meta", "TEXT")),
    "lm_calls": (("attempts", "TEXT"),),
}


class RunStore:
    """A SQLite run store; safe to use from one process's threads and asyncio tasks."""

    def __init__(self, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> None:
        """Open (or create) the store at `path`; `meta` is recorded with every run begun through
        this instance (e.g. the model ids in use and the `--model` overrides)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")  # other flowc processes may be writing
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.Lock()
        self._me = (os.getpid(), socket.gethostname(), _process_start(os.getpid()))
        self.mark_interrupted()

    def _migrate(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    try:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as e:  # another process added it just now
                        if "duplicate column" not in str(e):
                            raise
        self._db.execute("CREATE INDEX IF NOT EXISTS runs_status ON runs(status)")

    def mark_interrupted(self, *, mine: bool = False) -> list[str]:
        """Mark 'interrupted' every run still 'running' whose process on this host has ended (or
        is another process now holding the same pid); returns their ids. With `mine`, also the
        runs of this process (called when it was interrupted and will start no more). Runs begun
        by older flowc versions (no pid recorded) and runs of other hosts are left as they are."""
        pid, host, _ = self._me
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pid, proc_start FROM runs WHERE status='running' AND host=? AND pid IS NOT NULL",
                (host,),
            ).fetchall()
        dead = [
            rid
            for rid, rpid, rstart in rows
            if (mine and rpid == pid) or (rpid != pid and not _same_process_alive(rpid, rstart))
        ]
        if dead:
            with self._lock:
                self._db.executemany(
                    "UPDATE runs SET status='interrupted', error=?, error_code=NULL WHERE id=? AND status='running'",
                    [("interrupted before the run finished (the process was stopped or killed)", rid) for rid in dead],
                )
        return dead

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # -- writing -----------------------------------------------------------------------------------

    def begin_run(self, run: RunResult) -> None:
        pid, host, proc_start = self._me
        meta = {**self.meta, **run.meta}
        self._exec(
            "INSERT OR REPLACE INTO runs (id, pipeline, artifact_hash, started, status, inputs, pid, host, "
            "proc_start, meta) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (
                run.run_id,
                run.pipeline,
                run.artifact_hash,
                time.time(),
                _dumps(run.inputs),
                pid,
                host,
                proc_start,
                _dumps(meta) if meta else None,
            ),
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
                    "INSERT OR REPLACE INTO lm_calls (run_id, seq, idx, node, model, request, response, "
                    "prompt_tokens, completion_tokens, cost_usd, latency_s, cached, error, attempts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        _dumps([a.model_dump() for a in c.attempts]) if c.attempts else None,
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

    def list_runs(
        self, limit: int = 20, pipeline: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first: id, pipeline, started, status, duration, tokens, cost, LM
        calls, retries (failed attempts that were tried again), error code and meta."""
        where, args = [], []
        if pipeline:
            where.append("pipeline=?")
            args.append(pipeline)
        if status:
            where.append("status=?")
            args.append(status)
        # An unfinished run has no totals yet: count what its stored steps made so far.
        sql = (
            "SELECT id, pipeline, started, status, duration_s, "
            "COALESCE(tokens, (SELECT SUM(prompt_tokens + completion_tokens) FROM lm_calls c WHERE c.run_id=r.id)), "
            "COALESCE(cost_usd, (SELECT SUM(cost_usd) FROM lm_calls c WHERE c.run_id=r.id)), "
            "COALESCE(lm_calls, (SELECT COUNT(*) FROM lm_calls c WHERE c.run_id=r.id)), "
            "(SELECT SUM(COALESCE(json_array_length(attempts), 0) - "
            "(CASE WHEN error IS NOT NULL AND attempts IS NOT NULL THEN 1 ELSE 0 END)) "
            "FROM lm_calls c WHERE c.run_id=r.id), error_code, meta FROM runs r"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        keys = (
            "id",
            "pipeline",
            "started",
            "status",
            "duration_s",
            "tokens",
            "cost_usd",
            "lm_calls",
            "retries",
            "error_code",
            "meta",
        )
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for row in out:
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
            for k in ("tokens", "lm_calls", "retries"):
                row[k] = int(row[k] or 0)
            row["cost_usd"] = float(row["cost_usd"] or 0.0)
        return out

    def load(self, run_id: str) -> RunResult:
        """A stored run with its steps and LM calls; a unique prefix of the id is enough."""
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pipeline, artifact_hash, status, inputs, outputs, error, error_code, "
                "duration_s, meta FROM runs WHERE id LIKE ? ESCAPE '\\'",
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
        rid, pipeline, art, status, inputs, outputs, error, code, dur, meta = rows[0]
        run = RunResult(
            run_id=rid,
            pipeline=pipeline,
            artifact_hash=art,
            inputs=json.loads(inputs),
            outputs=json.loads(outputs) if outputs else {},
            status=status if status in ("error", "running", "interrupted") else "ok",
            error=error,
            error_code=code,
            duration_s=dur or 0.0,
            meta=json.loads(meta) if meta else {},
        )
        with self._lock:
            steps = self._db.execute(
                "SELECT seq, node, kind, iteration, inputs, outputs, status, error, note, "
                "started_s, duration_s FROM steps WHERE run_id=? ORDER BY seq",
                (rid,),
            ).fetchall()
            calls = self._db.execute(
                "SELECT seq, node, model, request, response, prompt_tokens, completion_tokens, "
                "cost_usd, latency_s, cached, error, attempts FROM lm_calls WHERE run_id=? "
                "ORDER BY seq, idx",
                (rid,),
            ).fetchall()
        by_seq: dict[int, list[LMCallRecord]] = {}
        for seq, node, model, req, resp, pt, ct, cost, lat, cached, err, tries in calls:
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
                    attempts=[AttemptRecord.model_validate(a) for a in json.loads(tries)] if tries else [],
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
    text = json.dumps(v, ensure_ascii=False, default=repr)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (bytes that were not UTF-8): keep them escaped
        return json.dumps(v, ensure_ascii=True, default=repr)
    return text


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _same_process_alive(pid: int, started: float | None) -> bool:
    """Whether process `pid` is alive and is the one that began the run (not a later process
    given the same pid; process start times are compared where /proc tells them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    now_start = _process_start(pid)
    return started is None or now_start is None or abs(now_start - started) < 2.0
