"""The native transport beside litellm: the same request bodies, one kept-alive session per event
loop, and runs that never import litellm unless a model needs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from flowc.runtime.client import ModelClient
from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.policy import ModelPolicy
from flowc.testing.fake_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

REQUESTS: list[dict[str, Any]] = [
    {},
    {"max_tokens": 9, "seed": 5, "stop": ("END", "STOP"), "temperature": 0.3},
    {"constraint": {"grammar": 'root ::= "a" | "b"'}},
    {"constraint": {"json_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
    {
        "constraint": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "strict": True, "schema": {"type": "object", "properties": {}}},
            }
        }
    },
    {"extra": {"top_p": 0.5, "presence_penalty": 0.1}},
]


@pytest.mark.parametrize("settings", REQUESTS, ids=["plain", "sampling", "grammar", "json_schema", "schema", "extra"])
def test_native_sends_what_litellm_sends(settings: dict[str, Any]) -> None:
    """Same request, both transports, one server: the JSON bodies are equal (headers aside)."""
    with FakeOpenAIServer() as srv:
        for transport in ("native", "litellm"):
            lm = ModelClient({"openai/fake": ModelPolicy(api_base=srv.base_url, transport=transport)})
            assert lm.transport_of("openai/fake") == transport
            req = LMRequest(model="openai/fake", messages=chat("be brief", "héllo"), **settings)
            asyncio.run(lm.complete(req))
        native, via_litellm = (h.body for h in srv.hits_log)
    assert native == via_litellm


def test_requests_of_one_node_share_their_serialized_settings() -> None:
    from flowc.runtime.transports.native import NativeTransport

    with FakeOpenAIServer() as srv:
        transport = NativeTransport()
        transport.prepare("openai/fake", ModelPolicy(api_base=srv.base_url))
        template = LMRequest(model="openai/fake", messages=(), max_tokens=5, constraint={"grammar": "g"})

        async def calls() -> None:
            for text in ("a", "b", "c"):
                await transport.complete(template.model_copy(update={"messages": chat(None, text)}))

        asyncio.run(calls())
        (route,) = {id(r): r for r in transport._routes.values()}.values()  # one endpoint, one route
        assert len(route.prefixes) == 1  # built once, reused by the node's three calls
        assert [h.body["messages"][0]["content"] for h in srv.hits_log] == ["a", "b", "c"]
        assert all(h.body["grammar"] == "g" and h.body["max_tokens"] == 5 for h in srv.hits_log)


def test_each_event_loop_gets_its_own_session_closed_with_the_loop() -> None:
    """`asyncio.run` per call (a sync wrapper) must neither reuse a dead loop's session nor leak one."""
    with FakeOpenAIServer() as srv:
        lm = ModelClient({"openai/fake": ModelPolicy(api_base=srv.base_url)})
        sessions = []
        for _ in range(3):

            async def one() -> None:
                from flowc.runtime.transports import pool

                await lm.complete(LMRequest(model="openai/fake", messages=chat(None, "q")))
                sessions.append(await pool._session())

            asyncio.run(one())
        assert len({id(s) for s in sessions}) == 3
        assert all(s.closed for s in sessions)  # closed by their loop's shutdown
        assert srv.hits == 3


def _imports(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_a_native_run_never_imports_litellm() -> None:
    code = (
        "import sys, asyncio\n"
        "from flowc.runtime.client import ModelClient\n"
        "from flowc.runtime.lm import LMRequest, chat\n"
        "from flowc.runtime.policy import ModelPolicy\n"
        "from flowc.testing.fake_server import FakeOpenAIServer\n"
        "with FakeOpenAIServer() as srv:\n"
        "    lm = ModelClient({'openai/fake': ModelPolicy(api_base=srv.base_url)})\n"
        "    asyncio.run(lm.complete(LMRequest(model='openai/fake', messages=chat(None, 'q'))))\n"
        "    ModelClient().prepare('local/smollm2')\n"
        "print('litellm' in sys.modules, 'aiohttp' in sys.modules)\n"
    )
    assert _imports(code) == "False True"


def test_spec_commands_import_neither_the_runtime_nor_litellm() -> None:
    code = (
        "import sys\n"
        "from flowc.cli.main import main\n"
        "main(['check', 'pipelines/agentic_rag.flow'])\n"
        "print(sorted(m for m in ('litellm', 'aiohttp', 'numpy', 'flowc.runtime.executor') if m in sys.modules))\n"
    )
    assert _imports(code).splitlines()[-1] == "[]"


def test_litellm_is_imported_when_a_model_needs_it() -> None:
    code = (
        "import sys\n"
        "from flowc.runtime.client import ModelClient\n"
        "lm = ModelClient()\n"
        "print(lm.transport_of('anthropic/claude-3-5-haiku-latest'), 'litellm' in sys.modules)\n"
    )
    assert _imports(code) == "litellm True"
