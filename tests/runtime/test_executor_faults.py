"""The executor over the real litellm client against the fault-injecting fake OpenAI server.

429s, 5xx, hangs, malformed and truncated replies: the client retries what the spec's `retries`
allows (counted at the server), a failure becomes a typed run error naming the node and the model,
the run store keeps the completed steps and marks the run as failed, and an evaluation finishes
every other example.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowc
from flowc.compile import CompiledPipeline
from flowc.runtime.client import ModelClient
from flowc.runtime.evaluate import MetricBinding, evaluate
from flowc.runtime.executor import Executor
from flowc.runtime.metrics import get_metric
from flowc.runtime.session import open_executor, policies
from flowc.runtime.store import RunStore
from flowc.runtime.trace import RunResult
from flowc.testing.fake_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(60)

SPEC = """
pipeline faulty {
  input question: str
  output answer: str <- answer.answer
  output n: int <- count.n
  model m = "openai/fake" {
    api_base: "$BASE"
    retries: $RETRIES
    timeout: $TIMEOUT
  }
  node rewrite: llm {
    prompt: "Rewrite: {{question}}"
    question <- question
    output query: str
  }
  node answer: llm {
    prompt: "Answer: {{query}}"
    query <- rewrite.query
    output answer: str
  }
  node count: llm {
    prompt: "Count the words of: {{answer}}"
    format: tagged
    answer <- answer.answer
    output n: int
  }
}
"""


def by_prompt(rules: dict[str, Callable[[], Reply]], default: str = "ok") -> Callable[[dict[str, Any]], Reply]:
    """The server's answer chosen by the node's prompt (its first message; a repair round adds
    messages after it), so it does not depend on the order of calls."""

    def reply(body: dict[str, Any]) -> Reply:
        text = body["messages"][0]["content"]
        for prefix, make in rules.items():
            if text.startswith(prefix) or prefix in text:
                return make()
        if text.startswith("Rewrite:"):
            return Reply(text="query for " + text.removeprefix("Rewrite: "))
        if text.startswith("Count"):
            return Reply(text="<n>3</n>")
        return Reply(text=default)

    return reply


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def compiled(srv: FakeOpenAIServer, retries: int = 2, timeout: float = 5) -> CompiledPipeline:
    return flowc.compile(
        SPEC.replace("$BASE", srv.base_url).replace("$RETRIES", str(retries)).replace("$TIMEOUT", str(timeout))
    )


def client(c: CompiledPipeline) -> ModelClient:
    """The client `flowc run` builds from the spec (retries, timeout, api_base), with short backoff."""
    pols = {m: dataclasses.replace(p, backoff_base_s=0.01, backoff_max_s=0.05) for m, p in policies(c).items()}
    return ModelClient(pols)


def run(c: CompiledPipeline, root: Path, question: str = "q?") -> tuple[RunResult, RunStore]:
    ex = open_executor(c, lm=client(c), root=root, cache=False)
    result = asyncio.run(ex.run({"question": question}))
    assert ex.store is not None
    return result, ex.store


def assert_stored(result: RunResult, store: RunStore) -> None:
    """The store holds exactly what the run returned, with the run's final status."""
    loaded = store.load(result.run_id)
    assert loaded.model_dump() == result.model_dump()
    assert store.status_of(result.run_id) == result.status


def test_transient_429_and_500_are_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    faults = iter([Reply.rate_limited(retry_after=0.01), Reply.server_error(500)])
    server.default = by_prompt({"Answer:": lambda: next(faults, Reply(text="Paris"))})
    result, store = run(compiled(server), tmp_path)
    assert result.status == "ok", result.error
    assert result.outputs == {"answer": "Paris", "n": 3}
    assert server.hits == 5  # rewrite, answer x3 (two retries), count
    assert [c.response for c in result.lm_calls] == ["query for q?", "Paris", "<n>3</n>"]
    assert_stored(result, store)


def test_persistent_500_is_a_typed_error_naming_node_and_model(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.default = by_prompt({"Answer:": lambda: Reply.server_error(503)})
    result, store = run(compiled(server, retries=2), tmp_path)
    assert result.status == "error" and result.error_code == "lm-server-error"
    assert "node 'answer'" in (result.error or "") and "model 'openai/fake'" in (result.error or "")
    assert server.hits == 1 + 3  # rewrite, then answer tried 1 + retries times
    assert result.path == ["rewrite", "answer"]
    rewrite, answer = result.steps
    assert rewrite.status == "ok" and rewrite.outputs == {"query": "query for q?"}
    assert answer.status == "error" and answer.lm_calls[0].error is not None
    assert answer.lm_calls[0].error.startswith("lm-server-error")
    assert_stored(result, store)
    assert store.list_runs()[0]["error_code"] == "lm-server-error"


def test_rate_limit_exhausted(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.default = by_prompt({"Rewrite:": lambda: Reply.rate_limited(retry_after=0.01)})
    result, store = run(compiled(server, retries=1), tmp_path)
    assert (result.status, result.error_code, server.hits) == ("error", "lm-rate-limited", 2)
    assert "node 'rewrite'" in (result.error or "") and "model 'openai/fake'" in (result.error or "")
    assert [s.status for s in store.load(result.run_id).steps] == ["error"]


def test_hang_times_out_per_the_spec(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.default = by_prompt({"Answer:": Reply.hanging})
    result, store = run(compiled(server, retries=1, timeout=0.3), tmp_path)
    assert (result.status, result.error_code) == ("error", "lm-timeout")
    assert "node 'answer'" in (result.error or "") and "no answer within 0.3 s" in (result.error or "")
    assert server.hits == 1 + 2
    assert result.steps[0].status == "ok"
    assert_stored(result, store)


def test_malformed_reply_is_not_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.default = by_prompt({"Answer:": lambda: Reply(malformed=True)})
    result, store = run(compiled(server), tmp_path)
    assert (result.status, result.error_code) == ("error", "lm-bad-response")
    assert "node 'answer'" in (result.error or "") and "model 'openai/fake'" in (result.error or "")
    assert server.hits == 2
    assert_stored(result, store)


@pytest.mark.parametrize("reply", [Reply(empty_choices=True), Reply(text=None), Reply(text="")])
def test_empty_replies_are_typed_errors(server: FakeOpenAIServer, tmp_path: Path, reply: Reply) -> None:
    server.default = by_prompt({"Answer:": lambda: reply})
    result, store = run(compiled(server, retries=0), tmp_path)
    assert (result.status, result.error_code) == ("error", "lm-bad-response")
    assert "node 'answer'" in (result.error or "")
    assert_stored(result, store)


def test_truncated_reply_is_repaired(server: FakeOpenAIServer, tmp_path: Path) -> None:
    replies = iter([Reply.truncated("<n>"), Reply(text="<n>2</n>")])
    server.default = by_prompt({"Count": lambda: next(replies)})
    result, store = run(compiled(server), tmp_path)
    assert result.status == "ok", result.error
    assert result.outputs["n"] == 2
    count = result.steps[-1]
    assert [c.response for c in count.lm_calls] == ["<n>", "<n>2</n>"]
    repair = count.lm_calls[1].request["messages"]
    assert repair[-2] == {"role": "assistant", "content": "<n>"}
    assert repair[-1]["content"].startswith("Your reply could not be read")
    assert_stored(result, store)


def test_truncated_twice_is_an_output_parse_error(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.default = by_prompt({"Count": lambda: Reply.truncated("<n>thr")})
    result, store = run(compiled(server), tmp_path)
    assert (result.status, result.error_code) == ("error", "output-parse-error")
    err = result.error or ""
    assert "node 'count'" in err and "model 'openai/fake'" in err and "also after one repair" in err
    assert err.count("node 'count'") == 1
    assert result.path == ["rewrite", "answer", "count"] and server.hits == 4
    assert [s.status for s in store.load(result.run_id).steps] == ["ok", "ok", "error"]
    assert store.status_of(result.run_id) == "error"


def test_server_down_is_a_connection_error(tmp_path: Path) -> None:
    with FakeOpenAIServer() as srv:
        c = compiled(srv, retries=1)
    result, store = run(c, tmp_path)  # the server is gone
    assert (result.status, result.error_code) == ("error", "lm-connection")
    assert "node 'rewrite'" in (result.error or "") and "model 'openai/fake'" in (result.error or "")
    assert_stored(result, store)


def test_eval_with_faults_loses_nothing(server: FakeOpenAIServer, tmp_path: Path) -> None:
    flaky = iter([Reply.server_error(500)] * 2)
    server.default = by_prompt(
        {
            "Answer: query for broken": lambda: Reply.server_error(500),  # fails on every try
            "Answer: query for flaky": lambda: next(flaky, Reply(text="flaky answer")),  # recovers
            "Answer: query for slow": lambda: Reply(text="slow answer", latency_s=0.05),
        }
    )
    c = compiled(server, retries=2)
    records = [
        {"id": "ok1", "question": "fine", "answer": "ok"},
        {"id": "bad", "question": "broken", "answer": "ok"},
        {"id": "flaky", "question": "flaky", "answer": "flaky answer"},
        {"id": "slow", "question": "slow", "answer": "slow answer"},
        {"id": "ok2", "question": "also fine", "answer": "ok"},
    ]
    ex: Executor = open_executor(c, lm=client(c), root=tmp_path, cache=False)
    metric = [MetricBinding("em", get_metric("exact_match"), "answer", "answer")]
    report = asyncio.run(evaluate(ex, records, metric, tmp_path / "ev", concurrency=3))
    assert report["examples"] == 5 and report["errors"] == 1
    assert report["metrics"]["em"] == pytest.approx(4 / 5)
    rows = {r["id"]: r for r in report_rows(tmp_path / "ev")}
    assert set(rows) == {r["id"] for r in records}
    assert rows["bad"]["status"] == "error" and "lm-server-error" in rows["bad"]["error"]
    assert all(rows[i]["status"] == "ok" for i in ("ok1", "flaky", "slow", "ok2"))
    assert ex.store is not None
    stored = ex.store.list_runs(limit=10)
    assert sorted(r["status"] for r in stored) == ["error", "ok", "ok", "ok", "ok"]
    bad_run = ex.store.load(rows["bad"]["run_id"])
    assert [s.status for s in bad_run.steps] == ["ok", "error"]


def report_rows(out: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
