"""Budgets counted at the client (Meter, MeteredLM), the call journal (JournaledLM) and run directories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import flowc
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget, BudgetExceeded, Meter, MeteredLM, estimate_tokens
from flowc.optimizers.job import Job
from flowc.optimizers.journal import JournaledLM
from flowc.optimizers.rundir import RunDir, truncate_after
from flowc.runtime.lm import LMRequest, LMResponse, chat
from flowc.testing.optimizer_fakes import QA_SPEC, QA_TRAIN, QA_VAL, FunctionLM


def req(text: str, max_tokens: int | None = 10) -> LMRequest:
    return LMRequest(model="fake/m", messages=chat(None, text), max_tokens=max_tokens)


class SlowLM:
    """Answers after a pause, so concurrent calls overlap."""

    def __init__(self, delay: float = 0.01, tokens: int = 5) -> None:
        self.delay = delay
        self.tokens = tokens
        self.calls = 0

    async def complete(self, request: LMRequest) -> LMResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return LMResponse(text="ok", model=request.model, prompt_tokens=self.tokens, completion_tokens=1)


async def _gather(lm: MeteredLM, n: int) -> list[LMResponse | BaseException]:
    return await asyncio.gather(*(lm.complete(req(f"q{i}")) for i in range(n)), return_exceptions=True)


def test_budget_describe() -> None:
    assert Budget().describe() == "unlimited"
    assert Budget(calls=3, tokens=100, usd=0.5, seconds=2).describe() == "3 calls, 100 tokens, $0.5, 2s"


def test_meter_counts_answered_calls() -> None:
    meter = Meter(Budget(calls=2))
    lm = MeteredLM(SlowLM(0), meter)
    asyncio.run(lm.complete(req("a")))
    asyncio.run(lm.complete(req("b")))
    with pytest.raises(BudgetExceeded) as e:
        asyncio.run(lm.complete(req("c")))
    assert e.value.axis == "calls" and e.value.code == "budget-exceeded"
    assert meter.used()["calls"] == 2 and meter.tokens == 12
    assert meter.pending_calls == 0 and meter.pending_tokens == 0


def test_concurrent_calls_cannot_overshoot_the_call_budget() -> None:
    inner = SlowLM()
    meter = Meter(Budget(calls=3))
    results = asyncio.run(_gather(MeteredLM(inner, meter), 10))
    ok = [r for r in results if isinstance(r, LMResponse)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) == 3 and len(refused) == 7 and inner.calls == 3 and meter.calls == 3


def test_concurrent_calls_cannot_overshoot_the_token_budget() -> None:
    est = estimate_tokens(req("q0"))
    inner = SlowLM(tokens=est - 1)  # an answer may use nearly all of its reservation
    meter = Meter(Budget(tokens=est * 4 + est // 2))
    results = asyncio.run(_gather(MeteredLM(inner, meter), 10))
    assert inner.calls == 4 and sum(isinstance(r, BudgetExceeded) for r in results) == 6
    assert meter.tokens <= meter.budget.tokens  # type: ignore[operator]


def test_a_failed_call_releases_its_reservation() -> None:
    class Failing:
        async def complete(self, request: LMRequest) -> LMResponse:
            raise RuntimeError("boom")

    meter = Meter(Budget(calls=1))
    with pytest.raises(RuntimeError):
        asyncio.run(MeteredLM(Failing(), meter).complete(req("a")))
    assert meter.pending_calls == 0 and meter.calls == 0
    asyncio.run(MeteredLM(SlowLM(0), meter).complete(req("a")))  # the budget is still there
    assert meter.calls == 1


def test_cached_answers_are_free() -> None:
    class Cached:
        async def complete(self, request: LMRequest) -> LMResponse:
            return LMResponse(text="hit", model="m", prompt_tokens=9, cached=True)

    meter = Meter(Budget(calls=1))
    lm = MeteredLM(Cached(), meter)
    for _ in range(3):
        asyncio.run(lm.complete(req("a")))
    assert meter.calls == 0 and meter.tokens == 0


def test_usd_and_seconds_budgets() -> None:
    class Priced:
        async def complete(self, request: LMRequest) -> LMResponse:
            return LMResponse(text="x", model="m", cost_usd=0.3)

    meter = Meter(Budget(usd=0.5))
    lm = MeteredLM(Priced(), meter)
    asyncio.run(lm.complete(req("a")))
    asyncio.run(lm.complete(req("b")))  # $0.3 < $0.5: admitted; now $0.6
    with pytest.raises(BudgetExceeded, match=r"\$0.5"):
        asyncio.run(lm.complete(req("c")))
    late = Meter(Budget(seconds=1.0), elapsed_before=5.0)  # time spent before a resume counts
    with pytest.raises(BudgetExceeded) as e:
        asyncio.run(MeteredLM(SlowLM(0), late).complete(req("a")))
    assert e.value.axis == "seconds"


# -- the journal -------------------------------------------------------------------------------------


def test_journal_replays_the_nth_identical_request(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    n = iter(range(100))
    first = FunctionLM(lambda r: f"answer {next(n)}")
    j = JournaledLM(first, path)
    answers = [asyncio.run(j.complete(req(x))).text for x in ["a", "a", "b"]]
    j.close()
    assert answers == ["answer 0", "answer 1", "answer 2"]

    fresh = FunctionLM(lambda r: "new")
    j2 = JournaledLM(fresh, path)
    assert j2.totals()[0] == 3
    again = [asyncio.run(j2.complete(req(x))).text for x in ["a", "b", "a", "a"]]
    j2.close()
    # "a" twice and "b" once come from the journal, in order; the third "a" is new
    assert again == ["answer 0", "answer 2", "answer 1", "new"] and j2.replayed == 3
    assert len(fresh.calls) == 1
    assert len(path.read_text().splitlines()) == 4


def test_journal_survives_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = JournaledLM(FunctionLM(lambda r: "x"), path)
    asyncio.run(j.complete(req("a")))
    j.close()
    with path.open("a") as fh:
        fh.write('{"key": "abc", "respo')  # killed mid-write
    j2 = JournaledLM(FunctionLM(lambda r: "y"), path)
    assert asyncio.run(j2.complete(req("a"))).text == "x"
    j2.close()


# -- run directories and jobs --------------------------------------------------------------------------


def test_rundir_refuses_a_second_job_and_a_different_one(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    job = {"optimizer": "textgrad", "seed": 0}
    rd.check_job(job, resume=False)
    with pytest.raises(FlowcError, match="already holds an optimization job"):
        RunDir(tmp_path / "run").check_job(job, resume=False)
    RunDir(tmp_path / "run").check_job(job, resume=True)  # same job: fine
    with pytest.raises(FlowcError, match="differs in seed"):
        RunDir(tmp_path / "run").check_job({**job, "seed": 1}, resume=True)


def test_rundir_state_and_truncation(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.load_state() is None
    rd.save_state({"step": 2, "values": {"a": "b"}})
    assert rd.load_state() == {"step": 2, "values": {"a": "b"}} and not (tmp_path / "state.json.tmp").exists()
    for step in (1, 2, 3, 3):
        rd.candidate(step=step, id=f"s{step}")
    truncate_after(tmp_path / "candidates.jsonl", 2)
    assert [c["step"] for c in rd.candidates()] == [1, 2]


def _job(tmp_path: Path, resume: bool, seed: int = 0) -> Job:
    return Job(
        "textgrad",
        flowc.compile(QA_SPEC),
        pipeline_lm=FunctionLM(lambda r: "p"),
        optimizer_lm=FunctionLM(lambda r: "o"),
        budget=Budget(calls=5),
        seed=seed,
        trainset=list(QA_TRAIN),
        valset=list(QA_VAL),
        settings={"steps": 1},
        run_dir=tmp_path / "run",
        resume=resume,
    )


def test_job_resume_charges_earlier_sessions_and_restores_state(tmp_path: Path) -> None:
    job = _job(tmp_path, resume=False)
    asyncio.run(job.pipeline_lm.complete(req("a")))
    asyncio.run(job.optimizer_lm.complete(req("b")))
    job.checkpoint(1, {"x": 1})
    job.candidate(step=1, id="s1")
    job.candidate(step=2, id="s2")  # logged by a step that never finished
    asyncio.run(job.pipeline_lm.complete(req("c")))  # made by the step that never finished
    job.close()
    with pytest.raises(FlowcError, match="already holds"):
        _job(tmp_path, resume=False)
    with pytest.raises(FlowcError, match="differs in seed"):
        _job(tmp_path, resume=True, seed=1)
    again = _job(tmp_path, resume=True)
    assert again.meter.calls == 3 and again.state is not None and again.state["x"] == 1
    assert [c["id"] for c in again.rundir.candidates()] == ["s1"]
    asyncio.run(again.pipeline_lm.complete(req("c")))  # the interrupted step's call: replayed, free
    assert again.replayed_calls == 1 and again.meter.calls == 3
    # a call of a checkpointed step is in the state already: an identical later request is a new
    # call, as in the uninterrupted job (not a replay of the earlier answer)
    asyncio.run(again.pipeline_lm.complete(req("a")))
    assert again.replayed_calls == 1 and again.meter.calls == 4
    again.close()
    job_json = json.loads((tmp_path / "run" / "job.json").read_text())
    assert job_json["optimizer"] == "textgrad" and job_json["budget"] == [5, None, None, None]
