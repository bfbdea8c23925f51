"""The run store: every run, every step's inputs and outputs, every LM call, in one SQLite file.

Writes are batched: `begin_run`, `add_step` and `end_run` only queue a record (about a microsecond
on the event loop), and the queue is committed in one transaction at most `FLUSH_S` later by a
short-lived timer thread, or at once when it holds `MAX_PENDING` records, when anything reads the
store, on `close()` and at interpreter exit. A commit per step cost ~0.8 ms of every LM call; one
per batch costs a few microseconds per record. What a crash can lose is bounded: a kill -9 loses
at most the last `FLUSH_S` seconds of records, and the file is never corrupted (WAL journal). The
evaluation checkpoints that `--resume` relies on are not kept here and are written at once.

Every `RunStore` opened on the same file in a process shares one queue and one connection, so a
store opened to read (`flowc runs`, a test) sees what another has queued. A half-finished run stays
inspectable (`flowc trace RUN_ID` shows it as 'running'). Requests are stored in canonical form:
they hold prompts and settings, never API keys.

A run records the process that runs it (pid, host, process start time). Opening the store marks
the runs whose process is gone as 'interrupted' (killed, or the machine went down), so a run
stays 'running' only while something is still running it. Every LM call keeps the attempts that
failed before it answered (retries and fallbacks, with their errors), and every run the meta of
the store that began it (the models in use, `--model` overrides).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.attempts import AttemptRecord
from flowc.runtime.trace import LMCallRecord, RunResult, StepRecord

log = logging.getLogger(__name__)

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

FLUSH_S = 0.1  # the longest a queued record waits for its commit
MAX_PENDING = 512  # a queue this long is committed at once, by the caller


class _Database:
    """One SQLite file's connection and write queue, shared by every RunStore open on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout=10000")  # other flowc processes may be writing
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.lock = threading.Lock()  # the connection
        self._queue_lock = threading.Lock()
        self._pending: list[tuple[str, Any]] = []
        self._timer: threading.Timer | None = None

    def _migrate(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    try:
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as e:  # another process added it just now
                        if "duplicate column" not in str(e):
                            raise
        self.conn.execute("CREATE INDEX IF NOT EXISTS runs_status ON runs(status)")

    def queue(self, kind: str, record: Any) -> None:
        with self._queue_lock:
            self._pending.append((kind, record))
            full = len(self._pending) >= MAX_PENDING
            if self._timer is None and not full:
                self._timer = threading.Timer(FLUSH_S, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.flush()

    def flush(self) -> None:
        """Commit everything queued, in order, in one transaction."""
        with self._queue_lock:
            items, self._pending = self._pending, []
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if not items:
            return
        with self.lock:
            try:
                self.conn.execute("BEGIN")
                for kind, record in items:
                    _WRITERS[kind](self.conn, record)
                self.conn.execute("COMMIT")
            except sqlite3.Error as e:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                log.error("run store %s: could not write %d records: %s", self.path, len(items), e)


_open: weakref.WeakValueDictionary[str, _Database] = weakref.WeakValueDictionary()
_open_lock = threading.Lock()


def _database(path: Path) -> _Database:
    key = str(path.resolve())
    with _open_lock:
        db = _open.get(key)
        if db is None:
            db = _Database(path)
            _open[key] = db
            # Closed when the last store on the file is gone; not at exit, where _flush_all still writes.
            weakref.finalize(db, db.conn.close).atexit = False
        return db


@atexit.register
def _flush_all() -> None:
    for db in list(_open.values()):
        db.flush()


class RunStore:
    """A SQLite run store; safe to use from one process's threads and asyncio tasks."""

    def __init__(self, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> None:
        """Open (or create) the store at `path`; `meta` is recorded with every run begun through
        this instance (e.g. the model ids in use and the `--model` overrides)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        self._store: _Database | None = _database(self.path)
        self._me = (os.getpid(), socket.gethostname(), _process_start(os.getpid()))
        self.mark_interrupted()

    def mark_interrupted(self, *, mine: bool = False) -> list[str]:
        """Mark 'interrupted' every run still 'running' whose process on this host has ended (or
        is another process now holding the same pid); returns their ids. With `mine`, also the
        runs of this process (called when it was interrupted and will start no more). Runs begun
        by older flowc versions (no pid recorded) and runs of other hosts are left as they are."""
        pid, host, _ = self._me
        rows = self._read(
            "SELECT id, pid, proc_start FROM runs WHERE status='running' AND host=? AND pid IS NOT NULL", (host,)
        )
        dead = [
            rid
            for rid, rpid, rstart in rows
            if (mine and rpid == pid) or (rpid != pid and not _same_process_alive(rpid, rstart))
        ]
        if dead:
            db = self._db
            with db.lock:
                db.conn.executemany(
                    "UPDATE runs SET status='interrupted', error=?, error_code=NULL WHERE id=? AND status='running'",
                    [("interrupted before the run finished (the process was stopped or killed)", rid) for rid in dead],
                )
        return dead

    @property
    def _db(self) -> _Database:
        if self._store is None:
            raise FlowcError("run-not-found", f"the run store {self.path} is closed", hint="open a new RunStore")
        return self._store

    def flush(self) -> None:
        """Commit every queued record now."""
        self._db.flush()

    def close(self) -> None:
        """Commit what is queued; this store can no longer be used (others on the file can)."""
        if self._store is not None:
            self._store.flush()
            self._store = None

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        db = self._db
        db.flush()  # read what was queued, by this store or another on the same file
        with db.lock:
            return db.conn.execute(sql, args).fetchall()

    # -- writing: queued, committed in batches -----------------------------------------------------

    def begin_run(self, run: RunResult) -> None:
        meta = {**self.meta, **run.meta}
        self._db.queue(
            "begin", (run.run_id, run.pipeline, run.artifact_hash, time.time(), run.inputs, *self._me, meta or None)
        )

    def add_step(self, run_id: str, step: StepRecord) -> None:
        # The step is finished: the executor no longer changes it, so it is serialized later.
        self._db.queue("step", (run_id, step))

    def end_run(self, run: RunResult) -> None:
        calls = run.lm_calls
        self._db.queue(
            "end",
            (
                time.time(),
                run.status,
                run.outputs,
                run.error,
                run.error_code,
                run.duration_s,
                sum(c.prompt_tokens + c.completion_tokens for c in calls),
                sum(c.cost_usd for c in calls),
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
        rows = self._read(sql, (*args, limit))
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
        rows = self._read(
            "SELECT id, pipeline, artifact_hash, status, inputs, outputs, error, error_code, "
            "duration_s, meta FROM runs WHERE id LIKE ? ESCAPE '\\'",
            (pattern,),
        )
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
        steps = self._read(
            "SELECT seq, node, kind, iteration, inputs, outputs, status, error, note, "
            "started_s, duration_s FROM steps WHERE run_id=? ORDER BY seq",
            (rid,),
        )
        calls = self._read(
            "SELECT seq, node, model, request, response, prompt_tokens, completion_tokens, "
            "cost_usd, latency_s, cached, error, attempts FROM lm_calls WHERE run_id=? "
            "ORDER BY seq, idx",
            (rid,),
        )
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
        rows = self._read("SELECT status FROM runs WHERE id=?", (run_id,))
        return str(rows[0][0]) if rows else "missing"


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


# -- what each queued record writes (run by the flush, inside its transaction) ----------------------


def _write_begin(conn: sqlite3.Connection, record: Any) -> None:
    run_id, pipeline, artifact, started, inputs, pid, host, proc_start, meta = record
    conn.execute(
        "INSERT OR REPLACE INTO runs (id, pipeline, artifact_hash, started, status, inputs, pid, host, proc_start, "
        "meta) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
        (run_id, pipeline, artifact, started, _dumps(inputs), pid, host, proc_start, _dumps(meta) if meta else None),
    )


def _write_step(conn: sqlite3.Connection, record: Any) -> None:
    run_id, step = record
    conn.execute(
        "INSERT OR REPLACE INTO steps (run_id, seq, node, kind, iteration, inputs, outputs, status, error, note, "
        "started_s, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    if step.lm_calls:
        conn.executemany(
            "INSERT OR REPLACE INTO lm_calls (run_id, seq, idx, node, model, request, response, prompt_tokens, "
            "completion_tokens, cost_usd, latency_s, cached, error, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
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
                )
                for i, c in enumerate(step.lm_calls)
            ],
        )


def _write_end(conn: sqlite3.Connection, record: Any) -> None:
    finished, status, outputs, error, code, duration, tokens, cost, n_calls, run_id = record
    conn.execute(
        "UPDATE runs SET finished=?, status=?, outputs=?, error=?, error_code=?, duration_s=?, tokens=?, "
        "cost_usd=?, lm_calls=? WHERE id=?",
        (finished, status, _dumps(outputs), error, code, duration, tokens, cost, n_calls, run_id),
    )


_WRITERS = {"begin": _write_begin, "step": _write_step, "end": _write_end}
