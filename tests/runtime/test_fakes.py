"""The shipped test doubles: scripted, echo, replay and recording LMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowc.errors import FlowcError, LMTimeout
from flowc.runtime.fakes import EchoLM, RecordingLM, ReplayLM, ScriptedLM, count_tokens
from flowc.runtime.lm import LMClient, LMRequest, chat


def req(user: str, *, model: str = "m", system: str | None = "be brief", **kw: object) -> LMRequest:
    return LMRequest(model=model, messages=chat(system, user), **kw)


def test_fakes_satisfy_the_protocol() -> None:
    for fake in (ScriptedLM([]), EchoLM(), ReplayLM([])):
        assert isinstance(fake, LMClient)


async def test_scripted_answers_in_order_and_records_calls() -> None:
    lm = ScriptedLM(["one", lambda r: r.messages[-1].content.upper(), "three four"])
    r1 = await lm.complete(req("a"))
    r2 = await lm.complete(req("shout"))
    r3 = await lm.complete(req("c d e"))
    assert [r1.text, r2.text, r3.text] == ["one", "SHOUT", "three four"]
    assert [c.messages[-1].content for c in lm.calls] == ["a", "shout", "c d e"]
    assert r3.completion_tokens == 2 and r3.prompt_tokens == 2 + 3
    assert lm.remaining == 0


async def test_scripted_raises_scripted_exceptions() -> None:
    boom = LMTimeout("lm-timeout", "slow", node="n", model="m")
    lm = ScriptedLM([boom, "ok"])
    with pytest.raises(LMTimeout):
        await lm.complete(req("a"))
    assert (await lm.complete(req("a"))).text == "ok"


async def test_scripted_raises_when_exhausted_naming_the_count() -> None:
    lm = ScriptedLM(["only"])
    await lm.complete(req("first"))
    with pytest.raises(FlowcError) as info:
        await lm.complete(req("the extra question"))
    assert info.value.code == "lm-script-exhausted"
    assert "answer #2" in str(info.value) and "only 1" in str(info.value)
    assert "the extra question" in str(info.value)
    assert len(lm.calls) == 2


async def test_echo_returns_the_prompt() -> None:
    r = await EchoLM().complete(req("What is 2+2?", system="sys"))
    assert r.text == "sys\nWhat is 2+2?"
    r = await EchoLM(last_user_only=True).complete(req("What is 2+2?", system="sys"))
    assert r.text == "What is 2+2?"
    assert r.completion_tokens == count_tokens("What is 2+2?") == 3


async def test_record_then_replay_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    rec = RecordingLM(ScriptedLM(["alpha", "beta"]), path)
    q1, q2 = req("first q", temperature=0.0), req("second q", max_tokens=5)
    assert (await rec.complete(q1)).text == "alpha"
    assert (await rec.complete(q2)).text == "beta"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["key"] for x in lines] == [q1.key(), q2.key()]
    replay = ReplayLM.from_file(path)
    assert len(replay) == 2
    # Replay is keyed by content, not order, and ignores who asked (node) and timeouts.
    r2 = await replay.complete(req("second q", max_tokens=5).model_copy(update={"node": "x", "timeout_s": 3}))
    r1 = await replay.complete(q1)
    assert (r1.text, r2.text) == ("alpha", "beta")
    assert r1.completion_tokens == 1 and r1.latency_s == 0.0


async def test_replay_miss_shows_request_and_nearest(tmp_path: Path) -> None:
    records = [
        {
            "key": req("What is the capital of France?").key(),
            "request": req("What is the capital of France?").canonical(),
            "response": "Paris",
        },
        {
            "key": req("Who wrote Hamlet?").key(),
            "request": req("Who wrote Hamlet?").canonical(),
            "response": "Shakespeare",
        },
    ]
    replay = ReplayLM(records)
    assert (await replay.complete(req("Who wrote Hamlet?"))).text == "Shakespeare"
    with pytest.raises(FlowcError) as info:
        await replay.complete(req("What is the capital of France?", max_tokens=10))
    msg = str(info.value)
    assert info.value.code == "lm-replay-miss"
    assert "last user message: 'What is the capital of France?'" in msg
    assert "nearest recorded request" in msg and "max_tokens" in msg
    assert records[0]["key"][:12] in msg  # type: ignore[index]


async def test_replay_reads_a_json_list_and_reports_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps([{"key": req("q").key(), "response": {"text": "a", "model": "m"}}]))
    assert (await ReplayLM.from_file(p).complete(req("q"))).text == "a"
    with pytest.raises(FlowcError) as info:
        ReplayLM.from_file(tmp_path / "nope.jsonl")
    assert info.value.code == "file-not-found"


async def test_recording_never_writes_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    path = tmp_path / "t.jsonl"
    await RecordingLM(EchoLM(), path).complete(req("hello"))
    assert secret not in path.read_text()
