"""ModelClient units: policies, cost, model resolution, shared rate limits (offline, fake server)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from flowc.errors import FlowcError, LMError
from flowc.runtime.client import ModelClient
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.ratelimit import RateLimiters
from flowc.testing.fake_server import FakeOpenAIServer, Reply

pytestmark = pytest.mark.timeout(30)


def test_is_an_lm_client() -> None:
    assert isinstance(ModelClient(), LMClient)


def test_policy_validation_and_backoff() -> None:
    p = ModelPolicy(backoff_base_s=1.0, backoff_max_s=5.0, fallbacks=["a", "b"])  # type: ignore[arg-type]
    assert p.fallbacks == ("a", "b")
    assert [p.backoff_s(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert p.backoff_s(1, 0.0) == 0.5
    with pytest.raises(FlowcError) as info:
        ModelPolicy(retries=-1, rpm=0)
    assert info.value.code == "invalid-value" and "retries" in str(info.value) and "rpm" in str(info.value)


def test_unknown_provider_fails_at_resolution() -> None:
    with pytest.raises(LMError) as info:
        ModelClient().prepare("nosuchprovider/model-x")
    assert info.value.code == "lm-bad-request" and "provider" in (info.value.hint or "")


def test_missing_local_model_file_fails_early(tmp_path: object) -> None:
    with pytest.raises(FlowcError) as info:
        ModelClient().prepare("local/gguf:/nonexistent/model.gguf")
    assert info.value.code == "model-file-not-found"
    with pytest.raises(FlowcError) as info:
        ModelClient().prepare("local/not-a-profile")
    assert info.value.code == "model-file-not-found" and "smollm2" in (info.value.hint or "")


def test_a_missing_model_file_is_reported_at_its_declaration(tmp_path: Path) -> None:
    import flowc
    from flowc.runtime.session import default_client

    spec = tmp_path / "qa.flow"
    spec.write_text(
        "pipeline qa {\n  input question: str\n  output answer: str <- a.answer\n"
        '  model m = "local/gguf:/nonexistent/model.gguf"\n'
        '  node a: llm {\n    prompt: "{{question}}"\n    question <- question\n    output answer: str\n  }\n}\n'
    )
    with pytest.raises(FlowcError) as info:
        default_client(flowc.compile(spec))
    span = info.value.diagnostic.span
    assert info.value.code == "model-file-not-found" and span is not None
    assert (span.path, span.line) == (str(spec), 4)


async def test_cost_of_a_known_model_uses_litellm_prices() -> None:
    with FakeOpenAIServer(default=Reply(text="x", prompt_tokens=1000, completion_tokens=100)) as srv:
        lm = ModelClient({"openai/gpt-4o-mini": ModelPolicy(api_base=srv.base_url)})
        r = await lm.complete(LMRequest(model="openai/gpt-4o-mini", messages=chat(None, "q")))
    # gpt-4o-mini in litellm's bundled map: $0.15 / 1M input, $0.60 / 1M output tokens.
    assert r.cost_usd == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)


async def test_rate_limits_hold_across_clients_sharing_a_registry() -> None:
    now = [0.0]

    async def fake_sleep(s: float) -> None:
        now[0] += s
        await asyncio.sleep(0)

    shared = RateLimiters(clock=lambda: now[0], sleep=fake_sleep)
    with FakeOpenAIServer() as srv:
        policy = {"openai/fake": ModelPolicy(api_base=srv.base_url, rpm=2)}
        a = ModelClient(policy, limiters=shared)
        b = ModelClient(policy, limiters=shared)
        req = LMRequest(model="openai/fake", messages=chat(None, "q"))
        await asyncio.gather(a.complete(req), b.complete(req), a.complete(req), b.complete(req))
        assert srv.hits == 4
    # 2 at once, then one every 30 s.
    assert now[0] == pytest.approx(60.0)


async def test_tpm_is_settled_with_reported_usage() -> None:
    shared = RateLimiters(clock=lambda: 0.0)  # frozen time: no refill hides the settlement
    with FakeOpenAIServer(default=Reply(prompt_tokens=10, completion_tokens=5)) as srv:
        lm = ModelClient({"openai/fake": ModelPolicy(api_base=srv.base_url, tpm=100_000)}, limiters=shared)
        await lm.complete(LMRequest(model="openai/fake", messages=chat(None, "q"), max_tokens=5000))
    limiter = shared.get("openai/fake")
    assert limiter is not None and limiter.available_tokens is not None
    # The 5000+ token estimate was returned; only the 15 tokens used stay charged.
    assert limiter.available_tokens == 100_000 - 15


async def test_backoff_sleeps_are_jittered_and_bounded() -> None:
    waits: list[float] = []

    async def record(s: float) -> None:
        waits.append(s)

    with FakeOpenAIServer([Reply.server_error()] * 4) as srv:
        lm = ModelClient(
            {"openai/fake": ModelPolicy(api_base=srv.base_url, retries=4, backoff_base_s=1.0, backoff_max_s=3.0)},
            rng=random.Random(0),
            sleep=record,
        )
        await lm.complete(LMRequest(model="openai/fake", messages=chat(None, "q")))
    assert len(waits) == 4
    ceilings = [1.0, 2.0, 3.0, 3.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings))
    assert len(set(waits)) == 4


async def test_request_timeout_overrides_the_policy() -> None:
    with FakeOpenAIServer([Reply.hanging()]) as srv:
        lm = ModelClient({"openai/fake": ModelPolicy(api_base=srv.base_url, retries=0, timeout_s=60)})
        req = LMRequest(model="openai/fake", messages=chat(None, "q"), timeout_s=0.2)
        with pytest.raises(LMError) as info:
            await lm.complete(req)
    assert info.value.code == "lm-timeout"


async def test_litellm_mock_response_offline() -> None:
    # litellm's documented offline mode: no server at all.
    lm = ModelClient()
    req = LMRequest(model="openai/gpt-4o-mini", messages=chat(None, "q"), node="n", extra={"mock_response": "mocked"})
    r = await lm.complete(req)
    assert r.text == "mocked" and r.model == "openai/gpt-4o-mini" and r.completion_tokens > 0


async def test_flowc_errors_raised_inside_a_provider_are_not_remapped(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    lm = ModelClient({f"local/gguf:{bad}": ModelPolicy(retries=0)})
    with pytest.raises(FlowcError) as info:
        await lm.complete(LMRequest(model=f"local/gguf:{bad}", messages=chat(None, "q"), max_tokens=2))
    assert info.value.code == "model-file-not-found" and "could not load" in str(info.value)


def test_token_prices() -> None:
    from flowc.runtime.client import token_prices

    assert token_prices("openai/gpt-4o-mini") == pytest.approx((0.15e-6, 0.6e-6))
    assert token_prices("local/smollm2") == (0.0, 0.0)
    assert token_prices("openai/some-self-hosted-model") == (0.0, 0.0)


async def test_credentials_in_request_extra_are_refused() -> None:
    req = LMRequest(
        model="openai/gpt-4o-mini",
        messages=chat(None, "q"),
        node="n",
        extra={"api_key": "sk-should-not-be-here", "mock_response": "x"},
    )
    with pytest.raises(LMError) as info:
        await ModelClient().complete(req)
    assert info.value.code == "lm-bad-request" and "environment" in (info.value.hint or "")
    assert "sk-should-not-be-here" not in str(info.value)


async def test_missing_api_key_is_an_auth_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lm = ModelClient({"openai/gpt-4o-mini": ModelPolicy(retries=0, timeout_s=5)})
    with pytest.raises(LMError) as info:
        await lm.complete(LMRequest(model="openai/gpt-4o-mini", messages=chat(None, "q"), node="gen"))
    assert info.value.code == "lm-auth" and "OPENAI_API_KEY" in (info.value.hint or "")
    assert info.value.node == "gen"


def test_local_call_past_its_deadline_never_reaches_the_model(tmp_path: Path) -> None:
    import time

    from flowc.runtime.local_provider import LoadedModel

    class Untouchable:
        def handle_chat_completions(self, body: dict[str, object]) -> dict[str, object]:
            raise AssertionError("a call whose caller gave up must not be decoded")

    loaded = LoadedModel(tmp_path / "m.gguf", Untouchable(), n_parallel=1)
    out = loaded.chat({"messages": []}, deadline=time.monotonic() - 1)
    assert out["error"]["type"] == "timeout"


class _StreamingServer:
    """Streams one chunk per word like llama.cpp's server, and records whether it was told to stop."""

    def __init__(self, words: list[str], on_word: object = None) -> None:
        self.words = words
        self.stopped_at: int | None = None
        self.on_word = on_word

    def handle_chat_completions(self, body: dict[str, Any], callback: Any) -> None:
        assert body["stream"] is True
        for i, w in enumerate(self.words):
            if callable(self.on_word):
                self.on_word(i)
            if callback({"id": "c1", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}):
                self.stopped_at = i
                return
        callback({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        callback({"id": "c1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": len(self.words)}})


def test_local_stream_is_assembled_into_one_response(tmp_path: Path) -> None:
    from flowc.runtime.local_provider import LoadedModel

    server = _StreamingServer(["Hello", " there", "!"])
    out = LoadedModel(tmp_path / "m.gguf", server, n_parallel=1).chat({"messages": []})
    assert out["choices"][0]["message"]["content"] == "Hello there!"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 3}
    assert server.stopped_at is None


def test_local_generation_stops_between_tokens_when_cancelled(tmp_path: Path) -> None:
    import threading

    from flowc.runtime.local_provider import LoadedModel

    cancel = threading.Event()

    def give_up_at_word_5(i: int) -> None:
        if i == 5:
            cancel.set()

    server = _StreamingServer([f"w{i} " for i in range(100)], on_word=give_up_at_word_5)
    out = LoadedModel(tmp_path / "m.gguf", server, n_parallel=1).chat({"messages": []}, cancel=cancel)
    assert server.stopped_at == 5  # llama.cpp was told to stop at once, not after 100 tokens
    assert out["error"]["type"] == "timeout"


def test_a_specs_transport_and_key_variable_reach_the_policy() -> None:
    import flowc
    from flowc.runtime.session import policies

    spec = """
pipeline p {
  input q: str
  output a: str <- n.a
  model m = "openai/qwen" {
    api_base: "https://vllm.example.com/v1"
    api_key_env: "MY_VLLM_KEY"
    transport: litellm
  }
  node n: llm {
    prompt: "{{q}}"
    q <- q
    output a: str
  }
}
"""
    compiled = flowc.compile(spec)
    pol = policies(compiled)["openai/qwen"]
    assert (pol.transport, pol.api_key_env) == ("litellm", "MY_VLLM_KEY")
    assert "MY_VLLM_KEY" in compiled.lockfile()["models"]["m"].values()  # the name, never a value
    client = ModelClient(policies(compiled))
    assert client.transport_of("openai/qwen") == "litellm"


def test_transport_choice_per_model() -> None:
    lm = ModelClient(
        {
            "openai/o3-mini": ModelPolicy(),  # a reasoning model on OpenAI's endpoint: litellm knows its rules
            "openai/served": ModelPolicy(api_base="http://127.0.0.1:8000/v1"),
            "openai/pinned": ModelPolicy(api_base="http://127.0.0.1:8000/v1", transport="litellm"),
        }
    )
    assert lm.transport_of("openai/gpt-4o-mini") == "native"
    assert lm.transport_of("openai/served") == "native"
    assert lm.transport_of("openai/o3-mini") == "litellm"
    assert lm.transport_of("openai/pinned") == "litellm"
    assert lm.transport_of("local/smollm2") == "embedded"
    with pytest.raises(LMError) as info:
        ModelClient({"anthropic/claude-3-5-haiku-latest": ModelPolicy(transport="native")}).prepare(
            "anthropic/claude-3-5-haiku-latest"
        )
    assert info.value.code == "lm-bad-request" and "transport" in (info.value.hint or "")
