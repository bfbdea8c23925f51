"""Fault injection through both HTTP paths: ModelClient -> the native transport (aiohttp) or
litellm -> the fake OpenAI server. Every scenario runs on both: the same typed errors, the same
retries, the same Retry-After.

Each test counts the server's hits, so the retries flowc claims to make are the ones that
happened, and runs under a short timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator

import pytest

from flowc.errors import LMConnectionError, LMError, LMRateLimited, LMServerError, LMTimeout
from flowc.runtime.client import ModelClient
from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.policy import ModelPolicy
from flowc.testing.fake_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(30)

MODEL = "openai/fake"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture(params=["native", "litellm"], autouse=True)
def transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs once per transport; `client()` and `policy()` read it."""
    global TRANSPORT
    TRANSPORT = request.param
    return str(request.param)


TRANSPORT = "native"


def policy(**settings: object) -> ModelPolicy:
    return ModelPolicy(**{"transport": TRANSPORT, **settings})  # type: ignore[arg-type]


def client(srv: FakeOpenAIServer, **settings: object) -> ModelClient:
    base: dict[str, object] = {"api_base": srv.base_url, "timeout_s": 5.0, "backoff_base_s": 0.01}
    base.update(settings)
    lm = ModelClient({MODEL: policy(**base)})
    assert lm.transport_of(MODEL) == TRANSPORT
    return lm


def ask(text: str = "hello", node: str | None = "answer") -> LMRequest:
    return LMRequest(model=MODEL, messages=chat("be brief", text), node=node)


async def test_plain_call(server: FakeOpenAIServer) -> None:
    server.push(Reply(text="hi there", prompt_tokens=7, completion_tokens=2))
    r = await client(server).complete(ask())
    assert (r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) == ("hi there", 7, 2, "stop")
    assert r.model == MODEL and r.latency_s > 0 and r.cost_usd == 0.0
    body = server.hits_log[0].body
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


async def test_request_settings_reach_the_server(server: FakeOpenAIServer) -> None:
    req = LMRequest(model=MODEL, messages=chat(None, "x"), temperature=0.3, max_tokens=9, seed=5, stop=("END",))
    await client(server).complete(req)
    body = server.hits_log[0].body
    assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"]) == (0.3, 9, 5, ["END"])


async def test_retries_429_and_500_then_succeeds(server: FakeOpenAIServer) -> None:
    server.push(Reply.rate_limited(retry_after=0.2), Reply.server_error(500), Reply(text="finally"))
    r = await client(server, retries=2).complete(ask())
    assert r.text == "finally"
    assert server.hits == 3
    gaps = [b.at - a.at for a, b in zip(server.hits_log, server.hits_log[1:])]
    # Retry-After (0.2 s) is honoured although the backoff base is 0.01 s.
    assert gaps[0] >= 0.2
    assert gaps[1] < 0.2


async def test_retries_give_up_with_a_typed_error_naming_node_and_model(server: FakeOpenAIServer) -> None:
    server.push(*[Reply.server_error(503)] * 5)
    with pytest.raises(LMServerError) as info:
        await client(server, retries=2).complete(ask(node="planner"))
    assert server.hits == 3  # one attempt + two retries, no hidden retries inside litellm/openai
    err = info.value
    assert err.code == "lm-server-error" and err.node == "planner" and err.model == MODEL
    assert "node 'planner'" in str(err) and f"model '{MODEL}'" in str(err)
    assert err.hint and "fallback" in err.hint


async def test_rate_limited_error_after_retries(server: FakeOpenAIServer) -> None:
    server.push(*[Reply.rate_limited(retry_after=0.01)] * 3)
    with pytest.raises(LMRateLimited) as info:
        await client(server, retries=1).complete(ask())
    assert server.hits == 2
    assert info.value.code == "lm-rate-limited" and "rpm" in (info.value.hint or "")


async def test_hang_times_out_and_is_retried(server: FakeOpenAIServer) -> None:
    server.push(Reply.hanging(), Reply.hanging())
    with pytest.raises(LMTimeout) as info:
        await client(server, retries=1, timeout_s=0.3).complete(ask())
    assert server.hits == 2
    assert info.value.code == "lm-timeout" and "0.3" in str(info.value)


async def test_latency_within_timeout_is_fine(server: FakeOpenAIServer) -> None:
    server.push(Reply(text="slow", latency_s=0.2))
    assert (await client(server, timeout_s=2.0).complete(ask())).text == "slow"


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (Reply(malformed=True), "not valid JSON"),
        (Reply(empty_choices=True), "no choices"),
        (Reply(text=None), "content is null"),
        (Reply(text=""), "content is empty"),
    ],
)
async def test_bad_responses_are_typed_and_not_retried(server: FakeOpenAIServer, reply: Reply, fragment: str) -> None:
    server.push(reply, Reply(text="should not be reached"))
    with pytest.raises(LMError) as info:
        await client(server, retries=3).complete(ask())
    assert info.value.code == "lm-bad-response"
    assert fragment in str(info.value)
    assert server.hits == 1


async def test_truncated_output_reports_finish_reason(server: FakeOpenAIServer) -> None:
    server.push(Reply.truncated("half an ans"))
    r = await client(server).complete(ask())
    assert (r.text, r.finish_reason) == ("half an ans", "length")


async def test_auth_error_names_the_env_var_and_leaks_no_key(
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-proj-THIS-IS-SECRET-0123456789"
    monkeypatch.setenv("MY_FAKE_KEY", secret)
    server.push(Reply(status=401), Reply(text="unreachable"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LMError) as info:
        await client(server, api_key_env="MY_FAKE_KEY").complete(ask())
    err = info.value
    assert err.code == "lm-auth" and server.hits == 1
    assert "MY_FAKE_KEY" in (err.hint or "")
    # The key really was sent (the server saw it) ...
    assert server.hits_log[0].headers["authorization"] == f"Bearer {secret}"
    # ... but appears in no message, rendering, traceback, log record or output.
    rendered = "\n".join(
        [str(err), repr(err), err.diagnostic.render(), "".join(traceback.format_exception(err)), caplog.text]
    )
    out = capsys.readouterr()
    assert secret not in rendered and secret not in out.out and secret not in out.err


async def test_bad_request_is_not_retried(server: FakeOpenAIServer) -> None:
    server.push(Reply(status=400), Reply(text="unreachable"))
    with pytest.raises(LMError) as info:
        await client(server, retries=3).complete(ask())
    assert info.value.code == "lm-bad-request" and server.hits == 1


async def test_connection_refused_is_typed_with_the_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    lm = ModelClient({MODEL: policy(api_base=base, retries=1, backoff_base_s=0.01, timeout_s=2)})
    with pytest.raises(LMConnectionError) as info:
        await lm.complete(ask())
    assert info.value.code == "lm-connection" and base in (info.value.hint or "")


async def test_fallback_is_used_when_the_primary_keeps_failing() -> None:
    with (
        FakeOpenAIServer(default=Reply.server_error(500)) as bad,
        FakeOpenAIServer(default=Reply(text="from fallback")) as good,
    ):
        lm = ModelClient(
            {
                "openai/primary": policy(
                    api_base=bad.base_url, retries=1, backoff_base_s=0.01, fallbacks=("openai/backup",)
                ),
                "openai/backup": policy(api_base=good.base_url, retries=0),
            }
        )
        r = await lm.complete(LMRequest(model="openai/primary", messages=chat(None, "q"), node="gen"))
        assert (r.text, r.model) == ("from fallback", "openai/backup")
        assert (bad.hits, good.hits) == (2, 1)
        assert good.hits_log[0].body["model"] == "backup"


async def test_all_fallbacks_failing_reports_each() -> None:
    with FakeOpenAIServer(default=Reply.server_error(500)) as bad, FakeOpenAIServer(default=Reply(status=401)) as worse:
        lm = ModelClient(
            {
                "openai/primary": policy(api_base=bad.base_url, retries=0, fallbacks=("openai/backup",)),
                "openai/backup": policy(api_base=worse.base_url, retries=0),
            }
        )
        with pytest.raises(LMServerError) as info:
            await lm.complete(LMRequest(model="openai/primary", messages=chat(None, "q"), node="gen"))
        err = info.value
        assert err.model == "openai/primary" and err.node == "gen"
        assert any("openai/backup: lm-auth" in n for n in err.diagnostic.notes)
        assert "openai/backup: lm-auth" in err.diagnostic.render()


async def test_many_concurrent_calls_with_faults_all_finish(server: FakeOpenAIServer) -> None:
    import asyncio

    server.push(*[Reply.server_error(500), Reply.rate_limited(0.01)] * 10)
    lm = client(server, retries=3)
    results = await asyncio.gather(*(lm.complete(ask(f"q{i}")) for i in range(40)))
    assert len(results) == 40 and all(r.text == "ok" for r in results)
    assert server.hits == 60


def test_fake_server_runs_in_its_own_process_and_stops_by_pid(transport: str) -> None:
    if transport != "native":
        pytest.skip("the fake server's own test: once is enough")
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "flowc.testing.fake_server"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with httpx.Client(base_url=url) as http:
            for _ in range(3):  # one kept-alive connection, several requests
                r = http.post("/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "a"}]})
                assert r.json()["choices"][0]["message"]["content"] == "ok"
            assert http.get("/models").status_code == 200
            assert http.post("/nope", json={}).status_code == 404
    finally:
        proc.terminate()
    assert proc.wait(10) == 0


async def test_a_call_made_while_handling_another_error_is_classified_on_its_own(server: FakeOpenAIServer) -> None:
    # The executor may call the model inside an except block (a repair after a parse error);
    # the outer error must neither replace nor colour the new call's error.
    from flowc.errors import OutputParseError

    server.push(Reply(status=401))
    lm = client(server, retries=0)
    try:
        raise OutputParseError("output-parse-error", "bad JSON", node="answer")
    except OutputParseError:
        with pytest.raises(LMError) as info:
            await lm.complete(ask())
    assert info.value.code == "lm-auth"


async def test_a_body_cut_off_mid_way_is_a_connection_error_and_retried(server: FakeOpenAIServer) -> None:
    server.push(Reply(text="lost", cut_body=True), Reply(text="whole"))
    r = await client(server, retries=1).complete(ask())
    assert r.text == "whole" and server.hits == 2


async def test_a_connection_closed_without_an_answer_is_retried(server: FakeOpenAIServer) -> None:
    server.push(Reply.connection_reset(), Reply(text="after the reset"))
    r = await client(server, retries=1).complete(ask())
    assert r.text == "after the reset" and server.hits == 2


async def test_a_connection_reset_every_time_ends_as_lm_connection(server: FakeOpenAIServer) -> None:
    server.push(*[Reply.connection_reset()] * 3)
    with pytest.raises(LMConnectionError) as info:
        await client(server, retries=1).complete(ask())
    assert info.value.code == "lm-connection" and server.hits == 2


async def test_sequential_calls_reuse_one_kept_alive_connection(server: FakeOpenAIServer) -> None:
    lm = client(server)
    for i in range(5):
        await lm.complete(ask(f"q{i}"))
    assert server.hits == 5
    assert len({h.connection for h in server.hits_log}) == 1


async def test_concurrent_calls_share_a_bounded_pool(server: FakeOpenAIServer) -> None:
    import asyncio

    server.default = Reply(text="ok", latency_s=0.05)
    lm = client(server)
    results = await asyncio.gather(*(lm.complete(ask(f"q{i}")) for i in range(32)))
    assert [r.text for r in results] == ["ok"] * 32
    # All 32 in flight at once need 32 connections; a second wave reuses them.
    await asyncio.gather(*(lm.complete(ask(f"r{i}")) for i in range(32)))
    assert server.connections <= 32 and server.hits == 64


async def test_the_providers_key_never_goes_to_a_custom_api_base(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-stay-home-0123456789")
    await client(server).complete(ask())
    sent = server.hits_log[0].headers.get("authorization", "")
    assert "sk-openai-must-stay-home" not in sent


async def test_a_named_key_variable_goes_to_its_api_base(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-stay-home-0123456789")
    monkeypatch.setenv("MY_VLLM_KEY", "vllm-key-0123456789")
    await client(server, api_key_env="MY_VLLM_KEY").complete(ask())
    assert server.hits_log[0].headers["authorization"] == "Bearer vllm-key-0123456789"


async def test_naming_a_providers_key_for_another_host_is_refused(server: FakeOpenAIServer) -> None:
    with pytest.raises(LMError) as info:
        client(server, api_key_env="OPENAI_API_KEY")
    assert info.value.code == "lm-auth" and "OPENAI_API_KEY" in str(info.value)
    assert "own variable" in (info.value.hint or "") and server.hits == 0


async def test_an_api_base_carrying_a_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(LMError) as info:
        ModelClient({MODEL: policy(api_base="http://user:sk-in-url-0123456789@127.0.0.1:9/v1")}).prepare(MODEL)
    assert info.value.code == "lm-bad-request" and "sk-in-url" not in str(info.value)
    assert "api_key_env" in (info.value.hint or "")


async def test_a_named_key_variable_that_is_unset_is_an_auth_error(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_UNSET_KEY", raising=False)
    with pytest.raises(LMError) as info:
        await client(server, api_key_env="MY_UNSET_KEY").complete(ask())
    assert info.value.code == "lm-auth" and "MY_UNSET_KEY" in (info.value.hint or "")


async def test_a_named_keys_value_is_scrubbed_whatever_its_variable_is_called(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowc.runtime.secrets import scrub

    monkeypatch.setenv("VLLM_CRED", "cred-0123456789-abcdef")  # a name without KEY/TOKEN/SECRET in it
    await client(server, api_key_env="VLLM_CRED").complete(ask())
    assert server.hits_log[0].headers["authorization"] == "Bearer cred-0123456789-abcdef"
    assert scrub("the server said: bad cred-0123456789-abcdef") == "the server said: bad ***"
