"""The run store tells the truth about runs that did not end well: every failed attempt of a
model call is kept (retries, with their errors), and a run whose process died is 'interrupted',
not 'running' forever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_fakes import cli

from flowc.runtime.store import RunStore, _same_process_alive
from flowc.testing.fake_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(120)

SPEC = """
pipeline flaky {{
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake" {{
    api_base: "{base}"
    retries: 3
    timeout: 5
  }}
  node answer: llm {{
    prompt: "Q: {{{{question}}}}"
    question <- question
    output answer: str
  }}
}}
"""


def test_every_failed_attempt_is_in_the_trace_and_the_store(
    flowc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000")
    with FakeOpenAIServer([Reply.rate_limited(retry_after=0.01), Reply.server_error(500), Reply(text="fine")]) as srv:
        spec = tmp_path / "flaky.flow"
        spec.write_text(SPEC.format(base=srv.base_url))
        code, out, err = cli(capsys, "run", str(spec), "-i", "question=q", "--no-cache", "--json")
        assert code == 0, err
        assert srv.hits == 3
    result = json.loads(out)
    (call,) = result["steps"][0]["lm_calls"]
    assert [(a["attempt"], a["error_code"]) for a in call["attempts"]] == [
        (1, "lm-rate-limited"),
        (2, "lm-server-error"),
    ]
    assert all(a["retry_in_s"] is not None and a["model"] == "openai/fake" for a in call["attempts"])
    store = RunStore(flowc_home / "runs.sqlite")
    (row,) = store.list_runs()
    assert row["retries"] == 2 and row["lm_calls"] == 1
    assert store.load(row["id"]).lm_calls[0].attempts[1].error_code == "lm-server-error"
    code, out, _ = cli(capsys, "trace", row["id"])
    assert "1 retried" not in out and "2 retried" in out
    assert "attempt 1 (openai/fake) failed" in out and "lm-rate-limited" in out
    code, out, _ = cli(capsys, "runs")
    assert "retries" in out.splitlines()[0] and "cost $" in out.splitlines()[0]
    code, out, _ = cli(capsys, "runs", "--json")
    assert json.loads(out)[0]["retries"] == 2


def test_a_call_that_gives_up_keeps_all_its_attempts(
    flowc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-000000")
    with FakeOpenAIServer(default=Reply.server_error(503)) as srv:
        spec = tmp_path / "flaky.flow"
        spec.write_text(SPEC.format(base=srv.base_url).replace("retries: 3", "retries: 1"))
        code, out, _ = cli(capsys, "run", str(spec), "-i", "question=q", "--no-cache", "--json")
        assert code == 1 and srv.hits == 2
    (call,) = json.loads(out)["steps"][0]["lm_calls"]
    assert [a["attempt"] for a in call["attempts"]] == [1, 2] and call["attempts"][-1]["retry_in_s"] is None
    assert call["error"].startswith("lm-server-error")
    assert RunStore(flowc_home / "runs.sqlite").list_runs()[0]["retries"] == 1


KILLED_RUN = """
import asyncio, sys
import flowc
from flowc.runtime.executor import Executor
from flowc.runtime.store import RunStore

class Slow:
    async def complete(self, req):
        store.flush()  # the store's writes are batched: make 'running' visible before saying so
        print("started", flush=True)
        await asyncio.sleep(60)

spec = '''
pipeline slow {
  input question: str
  output answer: str <- answer.text
  model m = "openai/fake"
  node answer: llm {
    prompt: "{{question}}"
    question <- question
  }
}
'''
store = RunStore(sys.argv[1])
ex = Executor(flowc.compile(spec), lm=Slow(), store=store)
asyncio.run(ex.run({"question": "q"}, run_id="doomed"))
"""


def test_a_killed_run_is_marked_interrupted_on_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    assert RunStore(db).status_of("doomed") == "running"  # its process is alive: it is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = RunStore(db)  # the next start of anything that opens the store
    assert store.status_of("doomed") == "interrupted"
    run = store.load("doomed")
    assert run.status == "interrupted" and "interrupted before the run finished" in (run.error or "")
    assert store.mark_interrupted() == []  # once


def test_a_reused_pid_does_not_keep_a_dead_run_running() -> None:
    me = os.getpid()
    assert _same_process_alive(me, None)
    if Path(f"/proc/{me}/stat").exists():
        assert not _same_process_alive(me, time.time() - 10_000)  # same pid, another process's start time
    assert not _same_process_alive(2**22 + 12345, None)


def test_a_keyless_server_on_another_host_through_model_override(
    flowc_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 127.0.0.2 is not one of the loopback names flowc knows: to flowc it is another host.
    secret = "sk-test-not-for-this-host-0000000"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    spec = tmp_path / "plain.flow"
    spec.write_text(SPEC.format(base="https://api.openai.com/v1"))
    with FakeOpenAIServer([Reply(text="from the other host")], host="127.0.0.2") as srv:
        override = f"m=openai/served-model,api_base={srv.base_url}"
        code, out, err = cli(capsys, "run", str(spec), "-i", "question=q", "--no-cache", "--model", override)
        assert code == 0, err
        assert "answer: from the other host" in out
        (hit,) = srv.hits_log
    assert hit.body["model"] == "served-model"
    assert secret not in hit.headers.get("authorization", "")  # no key goes to a host that is not OpenAI's
