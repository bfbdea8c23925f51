"""The Ray executor's parts that need no Ray instance: the shared limits service, the worker-side
limiter proxy, how a job's client chain is read, and the command-line checks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from flowc.cli.main import main
from flowc.distributed import import_ray
from flowc.distributed.limits import LimitsService, SharedLimiters
from flowc.distributed.scoring import ledger_of
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget, Meter, MeteredLM
from flowc.optimizers.journal import JournaledLM
from flowc.runtime.client import ModelClient
from flowc.runtime.fakes import EchoLM
from flowc.runtime.lm import LMRequest, LMResponse, chat
from flowc.runtime.trace import LMCallRecord, RunResult, StepRecord


class _Done:
    """An awaitable that is already done (what a Ray ObjectRef of a finished call looks like)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # a generator: `await` takes the returned value


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        result = self.fn(*args)
        return result if asyncio.iscoroutine(result) else _Done(result)


class InProcessActor:
    """Stands for a Ray actor handle: `actor.method.remote(...)` is awaitable."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self.target, name))


def test_limits_service_paces_and_settles_tokens() -> None:
    service = LimitsService()

    async def go() -> list[int]:
        charged = [await service.acquire("m", None, 100, 40, "w1"), await service.acquire("m", None, 100, 40, "w2")]
        service.adjust("m", 40 - 10)  # the first call used 10 tokens, not 40
        charged.append(await service.acquire("m", None, 100, 40, "w1"))
        return charged

    assert asyncio.run(go()) == [40, 40, 40]
    assert [w for _, _, w in service.grants()] == ["w1", "w2", "w1"]
    service.set_allowance(2, None)
    assert service.take(10) is None and service.take(10) is None
    assert "LM calls" in str(service.take(10))
    service.set_allowance(None, 15)
    assert service.take(10) is None and "tokens" in str(service.take(10))


def test_shared_limiters_keep_unlimited_models_local() -> None:
    service = LimitsService()
    limiters = SharedLimiters(InProcessActor(service), "w1")
    limiters.set_limits("limited", 60, None)
    assert limiters.get("free") is None
    limiter = limiters.get("limited")
    assert limiter is not None

    async def go() -> None:
        reservation = await limiters.acquire("limited", 7)
        assert reservation.estimated_tokens == 7
        reservation.settle(3)
        await limiters.acquire("free", 5)  # no limits: never reaches the service

    asyncio.run(go())
    assert [(m, w) for _, m, w in service.grants()] == [("limited", "w1")]


def test_the_job_client_chain_is_read_and_charged(tmp_path: Path) -> None:
    meter = Meter(Budget(calls=10, tokens=1000))
    journal = JournaledLM(MeteredLM(ModelClient(), meter), tmp_path / "journal.jsonl")
    ledger = ledger_of(journal)
    assert ledger is not None and ledger.meter is meter and ledger.journal is journal
    assert ledger.allowance() == (10, 1000)
    request = LMRequest(model="openai/x", messages=chat(None, "hi"), node="answer")
    call = LMCallRecord(
        node="answer",
        model="openai/x",
        request=request.canonical(),
        response="yo",
        prompt_tokens=3,
        completion_tokens=1,
    )
    run = RunResult(run_id="r", pipeline="p", artifact_hash="h", inputs={})
    run.steps.append(StepRecord(seq=0, node="answer", kind="llm", iteration=0, inputs={}, lm_calls=[call]))
    ledger.charge([run])
    assert (meter.calls, meter.tokens) == (1, 4) and ledger.allowance() == (9, 996)
    journal.close()
    replay = JournaledLM(EchoLM(), tmp_path / "journal.jsonl")
    assert replay.totals() == (1, 4, 0.0)
    assert asyncio.run(replay.complete(request)) == LMResponse(
        text="yo", model="openai/x", prompt_tokens=3, completion_tokens=1
    )
    # a client the workers cannot stand in for stays in process
    assert ledger_of(MeteredLM(EchoLM(), meter)) is None


def test_ray_options_need_the_ray_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    spec = Path(__file__).parents[2] / "pipelines" / "agentic_rag.flow"
    code = main(["eval", str(spec), "--data", str(tmp_path / "d.jsonl"), "--workers", "2"])
    assert code == 1 and "--workers is an option of the Ray executor" in capsys.readouterr().err


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FlowcError) as e:
        import_ray()
    assert e.value.code == "executor-unavailable" and "pip install 'flowc[ray]'" in str(e.value)
