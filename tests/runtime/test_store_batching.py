"""The run store's batched writes: queued on the hot path, committed together, never lost on a
normal exit, visible to any reader in the process at once and to other processes within FLUSH_S."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from flowc.runtime import store as store_mod
from flowc.runtime.store import FLUSH_S, RunStore
from flowc.runtime.trace import RunResult, StepRecord


def run(run_id: str) -> RunResult:
    return RunResult(run_id=run_id, pipeline="p", artifact_hash="h", inputs={"q": "x"})


def committed_runs(path: Path) -> int:
    """What another process would see: a separate connection, no flush."""
    with sqlite3.connect(str(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def test_records_are_queued_then_committed_within_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    store.begin_run(run("a"))
    store.add_step("a", StepRecord(seq=0, node="n", kind="llm", iteration=0, inputs={}))
    assert committed_runs(path) == 0  # queued, not yet written
    deadline = time.monotonic() + FLUSH_S + 5
    while committed_runs(path) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert committed_runs(path) == 1


def test_a_reader_in_the_same_process_sees_queued_records(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    writer = RunStore(path)
    writer.begin_run(run("b"))
    writer.end_run(run("b"))
    reader = RunStore(path)  # another store on the same file shares the queue
    assert [r["id"] for r in reader.list_runs()] == ["b"] and reader.status_of("b") == "ok"


def test_a_long_queue_is_committed_by_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    for i in range(store_mod.MAX_PENDING):
        store.begin_run(run(f"r{i}"))
    assert committed_runs(path) == store_mod.MAX_PENDING


def test_a_process_that_exits_without_closing_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    code = (
        "from flowc.runtime.store import RunStore\n"
        "from flowc.runtime.trace import RunResult\n"
        f"s = RunStore({str(path)!r})\n"
        "for i in range(3):\n"
        "    r = RunResult(run_id=f'x{i}', pipeline='p', artifact_hash='h', inputs={})\n"
        "    s.begin_run(r); s.end_run(r)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert committed_runs(path) == 3
