"""The run store, evaluation with per-example checkpoints, resume after a kill, the response cache,
and no API key in anything flowc writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from scenarios import FAN, LINEAR, PARSE_FAIL

import flowc
from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.client import ModelClient
from flowc.runtime.evaluate import MetricBinding, evaluate, load_dataset
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import ScriptedLM
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.metrics import Metric, get_metric
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.session import open_executor
from flowc.runtime.store import RunStore
from flowc.testing.fake_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(60)

ANSWERS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Peru": "Lima", "Chile": "Santiago", "Japan": "Tokyo"}
RECORDS: list[dict[str, Any]] = [
    {"id": f"ex{i}", "question": f"capital of {country}?", "answer": capital}
    for i, (country, capital) in enumerate(ANSWERS.items())
]


def country_of(req: LMRequest) -> str:
    text = req.messages[-1].content
    return next(c for c in ANSWERS if c in text)


class CapitalLM:
    """rewrite -> "<country> capital"; answer -> the capital (wrong for Peru); 'Chile' fails;
    raises `kill` (any BaseException) on call number `kill_at` (1-based)."""

    def __init__(self, kill_at: int | None = None, kill: BaseException | None = None) -> None:
        self.calls: list[LMRequest] = []
        self.kill_at = kill_at
        self.kill = kill

    async def complete(self, req: LMRequest) -> LMResponse:
        self.calls.append(req)
        if self.kill_at is not None and len(self.calls) >= self.kill_at:
            assert self.kill is not None
            raise self.kill
        await asyncio.sleep(0.005)
        country = country_of(req)
        if req.node == "rewrite":
            text = f"{country} capital"
        elif country == "Chile":
            from flowc.errors import LMServerError

            raise LMServerError("lm-server-error", "fake 500", node=req.node, model=req.model)
        else:
            text = "Cusco" if country == "Peru" else ANSWERS[country]
        return LMResponse(text=text, model=req.model, prompt_tokens=3, completion_tokens=1, cost_usd=0.001)


class Killed(BaseException):
    """Stands for the process being killed mid-run (not an Exception: nothing may swallow it)."""


def compiled(text: str) -> CompiledPipeline:
    return flowc.compile(text)


def fresh(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


def em() -> list[MetricBinding]:
    return [MetricBinding("em", get_metric("exact_match"), "answer", "answer")]


# -- the run store ---------------------------------------------------------------------------------


def test_store_round_trips_a_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    lm = ScriptedLM([lambda r: "yes" if "for" in r.messages[-1].content else "no"] * 2 + ["maybe"])
    result = asyncio.run(Executor(compiled(FAN), lm=lm, store=store).run({"question": "tabs?"}))
    assert result.status == "ok" and len(result.steps) == 3
    loaded = store.load(result.run_id)
    assert loaded.model_dump() == result.model_dump()  # every step, every LM call, every field
    assert loaded.path[-1] == "join" and len(loaded.lm_calls) == 3
    assert store.load(result.run_id[:6]).run_id == result.run_id  # a unique prefix is enough
    assert store.status_of(result.run_id) == "ok"
    (row,) = store.list_runs()
    assert (row["id"], row["status"], row["lm_calls"], row["tokens"]) == (result.run_id, "ok", 3, result.tokens)


def test_store_load_by_exact_id_or_unique_prefix(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    ex = Executor(compiled(LINEAR), lm=ScriptedLM(["q", "a"] * 3), store=store)
    for rid in ("run", "run2", "my_run"):
        asyncio.run(ex.run({"question": "q"}, run_id=rid))
    assert store.load("run").run_id == "run"  # also a prefix of run2, but its own id
    assert store.load("run2").run_id == "run2"
    assert store.load("my_").run_id == "my_run"  # '_' is a character, not a LIKE wildcard
    with pytest.raises(FlowcError) as e:
        store.load("r")
    assert e.value.code == "run-not-found" and "matches 2 runs" in str(e.value)
    with pytest.raises(FlowcError, match="no run 'nope'"):
        store.load("nope")


def test_store_keeps_concurrent_steps(tmp_path: Path) -> None:
    # pro and con start together; each is stored under its own seq, none overwrites the other
    store = RunStore(tmp_path / "runs.sqlite")
    for _ in range(3):
        lm = ScriptedLM([lambda r: "x"] * 3)
        r = asyncio.run(Executor(compiled(FAN), lm=lm, store=store).run({"question": "q"}))
        assert sorted(store.load(r.run_id).path) == ["con", "join", "pro"]


def test_failed_run_keeps_its_completed_steps(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    lm = ScriptedLM(["one two", "lots", "very many"])
    result = asyncio.run(Executor(compiled(PARSE_FAIL), lm=lm, store=store).run({"text": "one two"}))
    assert result.status == "error" and result.error_code == "output-parse-error"
    loaded = store.load(result.run_id)
    assert loaded.model_dump() == result.model_dump()
    assert (loaded.status, loaded.error_code) == ("error", "output-parse-error")
    prep, count = loaded.steps
    assert (prep.status, prep.outputs) == ("ok", {"clean": "one two"})
    assert count.status == "error" and [c.response for c in count.lm_calls] == ["lots", "very many"]
    assert store.list_runs()[0]["error_code"] == "output-parse-error"


def test_killed_run_stays_running_with_its_finished_steps(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    lm = CapitalLM(kill_at=2, kill=Killed())
    ex = Executor(compiled(LINEAR), lm=lm, store=store)
    with pytest.raises(Killed):
        asyncio.run(ex.run({"question": "capital of Peru?"}, run_id="killed1"))
    assert store.status_of("killed1") == "running"
    run = store.load("killed1")
    assert run.path == ["rewrite"] and run.steps[0].outputs == {"query": "Peru capital"}


# -- evaluation --------------------------------------------------------------------------------------


def test_evaluate_summary(tmp_path: Path) -> None:
    lm = CapitalLM()
    seen: list[tuple[int, int]] = []
    report = asyncio.run(
        evaluate(
            Executor(compiled(LINEAR), lm=lm),
            [dict(r) for r in RECORDS],
            em(),
            tmp_path / "ev",
            concurrency=3,
            on_progress=lambda d, t, _row: seen.append((d, t)),
        )
    )
    assert report["examples"] == 6 and report["errors"] == 1  # Chile's answer call fails
    assert report["metrics"]["em"] == pytest.approx(4 / 6)  # Peru is wrong, Chile failed
    # 2 calls per example, Chile's failed answer call included (it is in the trace, with its error)
    assert report["lm_calls"] == 12 and len(lm.calls) == 12
    assert report["tokens"] == 11 * 4 and report["cost_usd"] == pytest.approx(0.011)
    assert report["pipeline"] == "linear" and seen[0] == (0, 6) and seen[-1] == (6, 6)
    rows = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [r["id"] for r in RECORDS]
    by_id = {r["id"]: r for r in rows}
    assert by_id["ex3"]["outputs"] == {"answer": "Cusco"} and by_id["ex3"]["scores"] == {"em": 0.0}
    assert by_id["ex4"]["status"] == "error" and "lm-server-error" in by_id["ex4"]["error"]
    saved = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert saved["metrics"] == report["metrics"] and len(saved["examples"]) == 6


def test_evaluate_rejects_repeated_ids(tmp_path: Path) -> None:
    records = [{"id": "a", "question": "capital of France?"}, {"id": "a", "question": "capital of Peru?"}]
    with pytest.raises(FlowcError) as e:
        asyncio.run(evaluate(Executor(compiled(LINEAR), lm=CapitalLM()), records, em(), tmp_path / "ev"))
    assert e.value.code == "dataset-invalid" and "repeated: a" in str(e.value)


def test_load_dataset(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"question": "a"}\n\n{"question": "b", "id": "x"}\n')
    assert load_dataset(p) == [{"question": "a", "id": "0"}, {"question": "b", "id": "x"}]
    assert load_dataset(p, limit=1) == [{"question": "a", "id": "0"}]


async def _evaluate_then_cancel(ex: Executor, out: Path, after: int) -> None:
    task = asyncio.ensure_future(evaluate(ex, [dict(r) for r in RECORDS], em(), out, concurrency=2))
    results = out / "results.jsonl"
    while not (results.exists() and len(results.read_text().splitlines()) >= after):
        await asyncio.sleep(0.002)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", ["base_exception", "keyboard_interrupt", "cancelled"])
def test_killed_eval_resumes_without_losing_or_repeating_work(tmp_path: Path, how: str) -> None:
    out = tmp_path / "ev"
    if how == "cancelled":
        first = CapitalLM()
        asyncio.run(_evaluate_then_cancel(Executor(compiled(LINEAR), lm=first), out, after=2))
    else:
        kill: BaseException = Killed() if how == "base_exception" else KeyboardInterrupt()
        first = CapitalLM(kill_at=7, kill=kill)
        with pytest.raises(type(kill)):
            asyncio.run(evaluate(Executor(compiled(LINEAR), lm=first), fresh(RECORDS), em(), out, concurrency=2))
    first_results = (out / "results.jsonl").read_text().splitlines()
    finished = {json.loads(x)["id"] for x in first_results}
    assert 1 <= len(finished) < 6

    second = CapitalLM()
    report = asyncio.run(
        evaluate(Executor(compiled(LINEAR), lm=second), fresh(RECORDS), em(), out, concurrency=2, resume=True)
    )
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [r["id"] for r in RECORDS]  # every example exactly once
    asked = {country_of(c) for c in second.calls}
    ok = {json.loads(x)["id"] for x in first_results if json.loads(x)["status"] == "ok"}
    done_countries = {next(c for c in ANSWERS if c in r["question"]) for r in RECORDS if r["id"] in ok}
    assert not asked & done_countries  # no model call repeated for a finished example
    assert len(second.calls) == 2 * (6 - len(ok))  # the rest, a failed one (Chile) included
    assert report["examples"] == 6 and report["metrics"]["em"] == pytest.approx(4 / 6)


def test_resume_after_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    asyncio.run(evaluate(Executor(compiled(LINEAR), lm=CapitalLM()), [dict(r) for r in RECORDS[:3]], em(), out))
    results = out / "results.jsonl"
    with results.open("a") as fh:
        fh.write('{"id": "ex3", "run_id": "abc", "sta')  # the kill came mid-write
    lm = CapitalLM()
    report = asyncio.run(
        evaluate(Executor(compiled(LINEAR), lm=lm), [dict(r) for r in RECORDS], em(), out, resume=True)
    )
    assert report["examples"] == 6 and {country_of(c) for c in lm.calls} == {"Peru", "Chile", "Japan"}
    # the file is whole again: one readable row per example, so a later resume repeats nothing
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [r["id"] for r in RECORDS]
    again = CapitalLM()
    asyncio.run(evaluate(Executor(compiled(LINEAR), lm=again), [dict(r) for r in RECORDS], em(), out, resume=True))
    assert {country_of(c) for c in again.calls} == {"Chile"}  # only the failed example runs again


def test_evaluate_without_resume_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    asyncio.run(evaluate(Executor(compiled(LINEAR), lm=CapitalLM()), [dict(r) for r in RECORDS[:2]], em(), out))
    lm = CapitalLM()
    report = asyncio.run(evaluate(Executor(compiled(LINEAR), lm=lm), [dict(r) for r in RECORDS[:2]], em(), out))
    assert report["examples"] == 2 and len(lm.calls) == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


# -- response cache and secrets ----------------------------------------------------------------------


def test_cached_rerun_of_a_batch_makes_no_lm_call(tmp_path: Path) -> None:
    c = compiled(LINEAR)
    inputs = [{"question": f"capital of {k}?"} for k in ("France", "Italy", "Spain")]
    first = CapitalLM()
    runs = asyncio.run(open_executor(c, lm=first, root=tmp_path).run_batch(inputs))
    assert [r.outputs["answer"] for r in runs] == ["Paris", "Rome", "Madrid"] and len(first.calls) == 6
    assert not any(call.cached for r in runs for call in r.lm_calls)

    second = ScriptedLM([])  # raises on any call
    again = asyncio.run(open_executor(c, lm=second, root=tmp_path).run_batch(inputs))
    assert second.calls == []
    assert [r.outputs for r in again] == [r.outputs for r in runs]
    assert all(call.cached and call.cost_usd == 0.0 for r in again for call in r.lm_calls)
    assert len(RunStore(tmp_path / "runs.sqlite").list_runs()) == 6

    # without the cache the same batch asks the model again
    third = CapitalLM()
    asyncio.run(open_executor(c, lm=third, root=tmp_path, cache=False).run_batch(inputs))
    assert len(third.calls) == 6


FAKE_SPEC = """
pipeline keyed {
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake" {
    api_base: "$BASE"
    retries: 0
    timeout: 5
  }
  node answer: llm {
    prompt: "Answer: {{question}}"
    question <- question
    output answer: str
  }
}
"""


def test_api_keys_never_land_in_store_cache_or_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-DO-NOT-STORE-4f8a9c2e1b7d"
    monkeypatch.setenv("MY_FAKE_KEY", secret)  # a custom api_base gets only the key the spec names
    root = tmp_path / "home"

    def reply(body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        return Reply.server_error(500) if "boom" in text else Reply(text="Paris")

    with FakeOpenAIServer(default=reply) as srv:
        c = compiled(FAKE_SPEC.replace("$BASE", srv.base_url))
        client = ModelClient(
            {"openai/fake": ModelPolicy(api_base=srv.base_url, retries=0, timeout_s=5, api_key_env="MY_FAKE_KEY")}
        )
        ex = open_executor(c, lm=client, root=root)
        ok = asyncio.run(ex.run({"question": "capital of France?"}))
        bad = asyncio.run(ex.run({"question": "boom"}))
        records = [{"id": "1", "question": "capital of France?", "answer": "Paris"}, {"id": "2", "question": "boom"}]
        report = asyncio.run(evaluate(ex, records, em(), root / "evals" / "keyed"))
        # the key was really in play: the client sent it to the server
        assert any(secret in h.headers.get("authorization", "") for h in srv.hits_log)
    assert ok.status == "ok" and bad.status == "error" and report["errors"] == 1
    written = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"runs.sqlite", "cache.sqlite", "results.jsonl", "report.json"}
    for p in written:  # the databases, their WAL files, the eval files
        assert secret.encode() not in p.read_bytes(), p
        assert b"DO-NOT-STORE" not in p.read_bytes(), p


def test_resume_reruns_examples_scored_by_another_version_of_the_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    asyncio.run(evaluate(Executor(compiled(LINEAR), lm=CapitalLM()), fresh(RECORDS[:3]), em(), out))
    changed = compiled(LINEAR.replace("Answer the query:", "Answer this query:"))
    lm = CapitalLM()
    report = asyncio.run(evaluate(Executor(changed, lm=lm), fresh(RECORDS[:3]), em(), out, resume=True))
    assert len(lm.calls) == 6  # nothing reused from the old prompt's results
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["ex0", "ex1", "ex2"]
    assert {r["artifact_hash"] for r in rows} == {changed.hash} and report["artifact_hash"] == changed.hash


def test_evaluate_rejects_a_metric_bound_to_nothing(tmp_path: Path) -> None:
    ex = Executor(compiled(LINEAR), lm=CapitalLM())
    bad_target = [MetricBinding("em", get_metric("exact_match"), "answer", "gold")]
    with pytest.raises(FlowcError, match="field 'gold', which no record has") as e:
        asyncio.run(evaluate(ex, fresh(RECORDS), bad_target, tmp_path / "ev"))
    assert e.value.code == "dataset-invalid"
    bad_output = [MetricBinding("em", get_metric("exact_match"), "reply", "answer")]
    with pytest.raises(FlowcError, match="output 'reply', which 'linear' does not have") as e:
        asyncio.run(evaluate(ex, fresh(RECORDS), bad_output, tmp_path / "ev"))
    assert e.value.code == "unknown-port"
    assert not (tmp_path / "ev").exists()  # refused before running anything


def test_a_metric_that_breaks_is_a_clear_error(tmp_path: Path) -> None:
    def fragile(prediction: object, gold: object) -> float:
        raise TypeError("cannot compare")

    metric = [MetricBinding("fragile", Metric("fragile", fragile, "raises"), "answer", "answer")]
    with pytest.raises(FlowcError, match="metric 'fragile' failed on example") as e:
        asyncio.run(evaluate(Executor(compiled(LINEAR), lm=CapitalLM()), fresh(RECORDS[:1]), metric, tmp_path / "ev"))
    assert e.value.code == "invalid-value" and "TypeError: cannot compare" in str(e.value)


def test_the_unit_of_work_can_be_driven_without_evaluate(tmp_path: Path) -> None:
    # what another executor (a Ray pool) drives: run one example -> record it -> it counts as done
    from flowc.runtime.evaluate import Checkpoint, ExampleRunner

    ex = Executor(compiled(LINEAR), lm=CapitalLM())
    runner = ExampleRunner(ex, em())
    first = Checkpoint(tmp_path, ex.compiled.hash)
    first.open(resume=False)
    for rec in fresh(RECORDS[3:5]):  # Peru (wrong answer), Chile (fails)
        first.record(asyncio.run(runner.run(rec)))
    first.close()
    again = Checkpoint(tmp_path, ex.compiled.hash)
    again.open(resume=True)
    assert set(again.done) == {"ex3"} and again.done["ex3"]["scores"] == {"em": 0.0}
    assert set(again.retry_errors) == {"ex4"}  # the failed one is not done: it runs again
    row = asyncio.run(runner.run(fresh(RECORDS[4:5])[0]))
    assert (row["status"], row["error_code"], row["scores"]) == ("error", "lm-server-error", {"em": 0.0})
    again.record(row)
    again.close()
    assert "lm-server-error" in again.done["ex4"]["previous_errors"][0]
