"""The fault suite: an evaluation against a faulty server, killed with SIGKILL at a random point,
then resumed — and an account of every example.

    report = run_fault_suite(FaultSuite(examples=1000, rate=0.2, seed=7), workdir)

The server (`python -m flowc.testing.fault_schedule`) runs in its own process with a seeded
schedule of 429s, 500s, timeouts, malformed and cut-off bodies and closed connections. `flowc
eval` runs in another, and is killed once a seeded share of the examples is done; `flowc eval
--resume` then finishes the job. The report counts the examples finished, failed (after the one
resume, by error code) and retried, and two numbers that must be 0: lost (an example with no row)
and duplicated (an example with two rows, or one that was done at the kill and ran again).
It also checks the run store: no run may still say 'running'.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPEC = """
pipeline faults {{
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake" {{
    api_base: "{base}"
    retries: {retries}
    timeout: {timeout}
    max_tokens: 8
  }}
  node answer: llm {{
    prompt: "Answer: {{{{question}}}}"
    question <- question
    output answer: str
  }}
  metric em: exact_match(output = answer, target = answer)
}}
"""


@dataclass(frozen=True)
class FaultSuite:
    examples: int = 1000
    rate: float = 0.2
    seed: int = 7
    concurrency: int = 8
    retries: int = 5
    timeout_s: float = 1.0
    kinds: str = "rate_limited,server_error,timeout,malformed,cut_body,reset"
    kill_between: tuple[float, float] = (0.2, 0.8)  # the kill comes when this share of examples is done
    deadline_s: float = 900.0


def _flowc(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from flowc.cli import main; sys.exit(main())", *args]


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the kill
    return out


def run_fault_suite(suite: FaultSuite, work: Path) -> dict[str, Any]:
    """Run the suite in `work` (a fresh folder); returns the report."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FLOWC_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWC_MODELS", None)
    stats = work / "server_stats.json"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowc.testing.fault_schedule",
            f"--rate={suite.rate}",
            f"--seed={suite.seed}",
            f"--kinds={suite.kinds}",
            f"--stats={stats}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        if not base.startswith("http"):
            raise RuntimeError(f"the fake server did not start (exit code {server.wait(10)}); see its stderr above")
        spec = work / "faults.flow"
        spec.write_text(SPEC.format(base=base, retries=suite.retries, timeout=suite.timeout_s), encoding="utf-8")
        data = work / "data.jsonl"
        data.write_text(
            "".join(
                json.dumps({"id": f"q{i}", "question": f"question number {i}", "answer": "ok"}) + "\n"
                for i in range(suite.examples)
            ),
            encoding="utf-8",
        )
        out = work / "eval"
        argv = [
            "eval",
            str(spec),
            "--data",
            str(data),
            "--out",
            str(out),
            "-c",
            str(suite.concurrency),
            "--max-errors",
            str(suite.examples),
            "--show",
            "0",
        ]
        results = out / "results.jsonl"
        low, high = suite.kill_between
        kill_at = int(suite.examples * random.Random(suite.seed).uniform(low, high))
        t0 = time.monotonic()
        first = subprocess.Popen(_flowc(*argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while first.poll() is None and len(_rows(results)) < kill_at:
            if time.monotonic() - t0 > suite.deadline_s:
                break
            time.sleep(0.02)
        killed = first.poll() is None
        if killed:
            first.send_signal(signal.SIGKILL)
        first.wait()
        first_stderr = first.stderr.read().decode("utf-8", "replace") if first.stderr else ""
        if not killed and first.returncode not in (0, 1):
            raise RuntimeError(f"the evaluation failed before the kill (exit {first.returncode}):\n{first_stderr}")
        at_kill = {str(r["id"]): r["run_id"] for r in _rows(results) if r.get("status") == "ok"}
        first_seconds = time.monotonic() - t0
        t1 = time.monotonic()
        second = subprocess.run(
            _flowc(*argv, "--resume", "--json"),
            env=env,
            capture_output=True,
            text=True,
            timeout=suite.deadline_s,
        )
        resume_seconds = time.monotonic() - t1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    final = _rows(results)
    ids = Counter(str(r["id"]) for r in final)
    by_id = {str(r["id"]): r for r in final}
    expected = {f"q{i}" for i in range(suite.examples)}
    rerun = sorted(i for i, run in at_kill.items() if by_id.get(i, {}).get("run_id") != run)
    failed = [r for r in final if r.get("status") != "ok"]
    store = _store_summary(work / "home" / "runs.sqlite")
    return {
        "suite": asdict(suite),
        "kill_at_examples": kill_at,
        "killed": killed,
        "done_at_kill": len(at_kill),
        "examples": suite.examples,
        "finished": sum(r.get("status") == "ok" for r in final),
        "failed": len(failed),
        "failed_by_code": dict(Counter(str(r.get("error_code")) for r in failed).most_common()),
        "retried": sum(int(r.get("retries", 0)) for r in final),
        "retried_in_store": store["retries"],
        "lost": len(expected - set(ids)),
        "duplicated": sum(n - 1 for n in ids.values() if n > 1) + len(rerun),
        "rerun_after_kill": rerun[:10],
        "runs_left_running": store["running"],
        "runs_interrupted": store["interrupted"],
        "server": json.loads(stats.read_text()) if stats.exists() else {},
        "resume_exit_code": second.returncode,
        "resume_stderr_tail": second.stderr[-2000:],
        "seconds_first": round(first_seconds, 2),
        "seconds_resume": round(resume_seconds, 2),
    }


def _store_summary(path: Path) -> dict[str, int]:
    import sqlite3

    if not path.exists():
        return {"running": 0, "interrupted": 0, "retries": 0}
    db = sqlite3.connect(str(path))
    try:
        status = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        retries = db.execute(
            "SELECT SUM(COALESCE(json_array_length(attempts), 0) - "
            "(CASE WHEN error IS NOT NULL AND attempts IS NOT NULL THEN 1 ELSE 0 END)) FROM lm_calls"
        ).fetchone()[0]
    finally:
        db.close()
    return {
        "running": int(status.get("running", 0)),
        "interrupted": int(status.get("interrupted", 0)),
        "retries": int(retries or 0),
    }
