"""Runs the scenario catalog (scenarios.py) and checks concurrency: independent branches overlap,
a batch runs with bounded concurrency."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest
from scenarios import FAN, LINEAR, MAPS, SCENARIOS, TOOLS, WIKI, Call, PathItem, Scenario, resolve

import flowc
from flowc.compile import CompiledPipeline
from flowc.runtime.config import RunConfig
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import ScriptedLM
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.tools import ToolRegistry
from flowc.runtime.trace import RunResult

pytestmark = pytest.mark.timeout(60)

_COMPILED: dict[str, CompiledPipeline] = {}
_POOL = RetrieverPool()  # one BM25 index over tiny_wiki for the whole module


def compiled(source: str) -> CompiledPipeline:
    if source not in _COMPILED:
        _COMPILED[source] = flowc.compile(source)
    return _COMPILED[source]


def last_user(req: LMRequest) -> str:
    return next(m.content for m in reversed(req.messages) if m.role == "user")


def check_path(actual: list[str], expected: tuple[PathItem, ...]) -> None:
    i = 0
    for item in expected:
        group = [item] if isinstance(item, str) else sorted(item)
        got = actual[i : i + len(group)]
        assert sorted(got) == sorted(group), f"path {actual}: expected {expected}"
        i += len(group)
    assert i == len(actual), f"path {actual}: expected {expected}"


def check_calls(requests: list[LMRequest], expected: tuple[Call, ...], ordered: bool) -> None:
    got = [(r.node, last_user(r)) for r in requests]
    assert len(got) == len(expected), f"{len(got)} LM calls {[n for n, _ in got]}, expected {len(expected)}"
    if ordered:
        pairs = list(zip(got, expected, strict=True))
    else:  # per node, in any order: concurrent calls (a map's items) may reach the model either way
        by_node: dict[str | None, list[str]] = defaultdict(list)
        for node, text in got:
            by_node[node].append(text)
        pairs = []
        for call in expected:
            assert by_node.get(call.node), f"no (more) calls from {call.node}: {[n for n, _ in got]}"
            texts = by_node[call.node]
            match = next((t for t in texts if all(part in t for part in call.has)), texts[0])
            texts.remove(match)
            pairs.append(((call.node, match), call))
    for (node, text), call in pairs:
        assert node == call.node, f"calls {[n for n, _ in got]}, expected {[c.node for c in expected]}"
        for part in call.has:
            assert part in text, f"{node}: {part!r} not in its prompt {text!r}"


def run_scenario(sc: Scenario) -> tuple[RunResult, ScriptedLM]:
    lm = ScriptedLM(sc.script)
    ex = Executor(
        compiled(sc.source),
        lm=lm,
        tools=ToolRegistry(dict(sc.tools), load_plugins=False),
        retrievers=_POOL,
        config=sc.config,
    )
    return asyncio.run(ex.run(dict(sc.inputs))), lm


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    result, lm = run_scenario(sc)
    assert result.status == sc.status, result.error
    if sc.status == "ok":
        assert result.error is None
        assert result.outputs == {**result.outputs, **(sc.outputs or {})}
        assert set(result.outputs) == set(compiled(sc.source).spec.outputs)
    else:
        assert result.error_code == sc.error_code, result.error
        for part in sc.error_has:
            assert part in (result.error or ""), f"{part!r} not in {result.error!r}"
        # the failing step is the last one, recorded with its error; every step before it is kept
        done = result.steps[:-1] if sc.step_fails else result.steps
        if sc.step_fails:
            assert result.steps[-1].status == "error" and result.steps[-1].error == result.error
        assert all(s.status == "ok" for s in done)
    check_path(result.path, sc.path)
    check_calls(lm.calls, sc.calls, sc.calls_ordered)
    # the trace holds the same calls the client saw (subflow calls included), nothing more
    assert sorted(c.request["messages"][-1]["content"] for c in result.lm_calls) == sorted(
        last_user(r) for r in lm.calls
    )
    assert [s.seq for s in result.steps] == list(range(len(result.steps)))
    notes = {s.node: s.note for s in result.steps if s.note}
    for node, text in sc.notes.items():
        assert text in (notes.get(node) or ""), f"{node}: note {notes.get(node)!r}"
    if not sc.notes:
        assert not notes, notes
    if sc.check is not None:
        sc.check(result)


def test_catalog_covers_every_node_kind_and_topology() -> None:
    kinds = {n.kind for sc in SCENARIOS for n in compiled(sc.source).graph.nodes()}
    assert {"llm", "retrieve", "tool", "subflow", "map"} <= kinds
    names = " ".join(s.name for s in SCENARIOS)
    for topic in ("linear", "fan_out", "loop_router", "loop_back_edge", "route", "map", "typed", "optional"):
        assert topic in names


def test_step_records_inputs_outputs_iterations() -> None:
    sc = next(s for s in SCENARIOS if s.name == "loop_router_continues_then_exits")
    result, _ = run_scenario(sc)
    drafts = [s for s in result.steps if s.node == "draft"]
    assert [s.iteration for s in drafts] == [0, 1]
    assert [s.inputs for s in drafts] == [{"topic": "owls", "notes": "none"}, {"topic": "owls", "notes": "say when"}]
    review = next(s for s in result.steps if s.node == "review")
    assert review.outputs == {"next": "draft", "score": 4, "notes": "say when"}
    assert result.tokens == sum(c.prompt_tokens + c.completion_tokens for c in result.lm_calls) > 0


def test_executor_is_reusable_and_runs_are_independent() -> None:
    lm = ScriptedLM(["q1", "a1", "q2", "a2"])
    ex = Executor(compiled(LINEAR), lm=lm)
    r1 = ex.run_sync({"question": "one"})
    r2 = ex.run_sync({"question": "two"})
    assert (r1.outputs, r2.outputs) == ({"answer": "a1"}, {"answer": "a2"})
    assert r1.run_id != r2.run_id


def test_bad_inputs_are_typed_errors_without_steps() -> None:
    ex = Executor(compiled(LINEAR), lm=ScriptedLM([]))
    missing = ex.run_sync({})
    assert (missing.status, missing.error_code, missing.steps) == ("error", "missing-pipeline-input", [])
    unknown = ex.run_sync({"question": "q", "extra": 1})
    assert unknown.error_code == "missing-pipeline-input" and "'extra' is not an input" in (unknown.error or "")
    wrong = ex.run_sync({"question": 3})
    assert wrong.error_code == "input-type-error" and "input 'question' should be str" in (wrong.error or "")


# -- concurrency -----------------------------------------------------------------------------------------


class SleepyLM:
    """Answers after `delay` seconds (or `delays[node]`), recording when each call started and ended."""

    def __init__(self, delay: float = 0.1, delays: dict[str, float] | None = None) -> None:
        self.delay = delay
        self.delays = delays or {}
        self.spans: list[tuple[str, float, float]] = []
        self.active = 0
        self.peak = 0

    async def complete(self, req: LMRequest) -> LMResponse:
        start = time.perf_counter()
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delays.get(req.node or "", self.delay))
        finally:
            self.active -= 1
        self.spans.append((req.node or "", start, time.perf_counter()))
        if req.node == "split":
            text = "<parts>PayPal\nPretenders\nCongress\nBirmingham</parts>"
        else:
            text = f"{req.node} says {last_user(req)[-12:]}"
        return LMResponse(text=text, model=req.model, prompt_tokens=1, completion_tokens=1)


def test_independent_branches_overlap() -> None:
    lm = SleepyLM(delays={"pro": 0.2, "con": 0.2, "join": 0.05})
    ex = Executor(compiled(FAN), lm=lm)
    t0 = time.perf_counter()
    result = asyncio.run(ex.run({"question": "q"}))
    wall = time.perf_counter() - t0
    assert result.status == "ok", result.error
    spans = {node: (a, b) for node, a, b in lm.spans}
    (pro_a, pro_b), (con_a, con_b), (join_a, _) = spans["pro"], spans["con"], spans["join"]
    assert pro_a < con_b and con_a < pro_b, "pro and con did not overlap"
    assert join_a >= max(pro_b, con_b) - 0.01, "join started before both branches finished"
    # the critical path is 0.25 s (a branch, then join); one call after another would take 0.45 s
    assert 0.25 <= wall < 0.4, wall
    # each branch's step started at the run's start, not after the other
    steps = {s.node: s for s in result.steps}
    assert abs(steps["pro"].started_s - steps["con"].started_s) < 0.05


def test_map_branches_run_concurrently_up_to_the_limit() -> None:
    def run(limit: int) -> tuple[float, SleepyLM, RunResult]:
        lm = SleepyLM(0.1)
        ex = Executor(
            compiled(resolve(MAPS.replace("max_items: 2", "max_items: 4"))),
            lm=lm,
            tools=ToolRegistry(TOOLS, load_plugins=False),
            retrievers=_POOL,
            config=RunConfig(map_concurrency=limit),
        )
        t0 = time.perf_counter()
        r = asyncio.run(ex.run({"question": "q"}))
        return time.perf_counter() - t0, lm, r

    asyncio.run(_POOL.get(WIKI, "bm25"))  # build the index outside the timed runs
    wall4, lm4, r4 = run(4)
    assert r4.status == "ok", r4.error
    assert len(r4.outputs["answers"]) == 4 and len(r4.outputs["sub_answers"]) == 4
    # split (0.1 s), then the 8 branch calls of both maps, up to 4 per map at once (0.1 s);
    # one after another they would take 0.9 s
    assert 5 <= lm4.peak <= 8 and wall4 < 0.6, (lm4.peak, wall4)
    _, lm1, r1 = run(1)
    assert r1.status == "ok" and lm1.peak <= 2  # one branch per map at a time: each_llm and each_flow


def test_run_batch_bounded_concurrency_keeps_order() -> None:
    lm = SleepyLM(0.1)
    ex = Executor(compiled(LINEAR), lm=lm)
    inputs: list[dict[str, Any]] = [{"question": f"q{i}"} for i in range(6)]
    t0 = time.perf_counter()
    results = asyncio.run(ex.run_batch(inputs, concurrency=3))
    wall = time.perf_counter() - t0
    assert [r.inputs for r in results] == inputs
    assert all(r.status == "ok" for r in results)
    assert [r.outputs["answer"] for r in results] == [f"answer says {r.outputs['answer'][-12:]}" for r in results]
    assert lm.peak == 3
    # two waves of three runs, two calls each: 0.4 s; serially 1.2 s
    assert 0.4 <= wall < 0.8, wall
    assert len({r.run_id for r in results}) == 6


class FailsFor:
    """Fails at once (a typed LM error) for calls whose node or last message names `what`; other
    calls sleep `delay`, and those that finish are counted."""

    def __init__(self, what: str, delay: float = 0.0) -> None:
        self.what = what
        self.delay = delay
        self.finished = 0

    async def complete(self, req: LMRequest) -> LMResponse:
        from flowc.errors import LMServerError

        if req.node == self.what or self.what in last_user(req):
            raise LMServerError("lm-server-error", "down", node=req.node, model=req.model)
        if self.delay and req.node != "split":
            await asyncio.sleep(self.delay)
        self.finished += 1
        text = "<parts>good one\nbad one\ngood two</parts>" if req.node == "split" else "x"
        return LMResponse(text=text, model=req.model)


def test_steps_finishing_with_a_failure_are_all_recorded() -> None:
    # pro fails and con succeeds in the same turn of the loop: the trace keeps con's step too
    result = asyncio.run(Executor(compiled(FAN), lm=FailsFor("pro")).run({"question": "q"}))
    assert result.status == "error" and result.error_code == "lm-server-error"
    assert sorted((s.node, s.status) for s in result.steps) == [("con", "ok"), ("pro", "error")]
    assert [s.seq for s in result.steps] == [0, 1]


MAP_ONLY = """
pipeline map_only {
  input question: str
  output answers: list[str] <- each.answer
  model m = "openai/fake"
  node split: llm {
    prompt: "Split: {{question}}"
    format: tagged
    question <- question
    output parts: list[str]
  }
  node each: map {
    over <- split.parts
    do: llm {
      prompt: "Answer: {{part}}"
      part <- item
      output answer: str
    }
  }
}
"""


def test_a_failing_map_branch_stops_its_siblings() -> None:
    # the "bad one" branch fails at once; the two others, still waiting on the model, are
    # cancelled with the step instead of calling on in the background after the run ended
    lm = FailsFor("bad one", delay=0.3)
    ex = Executor(compiled(MAP_ONLY), lm=lm)

    async def go() -> tuple[RunResult, int]:
        r = await ex.run({"question": "q"})
        await asyncio.sleep(0.4)  # long enough for an orphaned branch to finish
        return r, lm.finished

    result, finished = asyncio.run(go())
    assert result.status == "error" and "node 'each'" in (result.error or "")
    assert finished == 1  # split only
    assert result.duration_s < 0.25
