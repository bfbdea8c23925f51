"""The embedded local model for real: SmolLM2 through the embedded transport and over HTTP.

Generations are kept to a few tokens: these tests prove the path runs, not that the model is good.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flowc.errors import LMConnectionError, LMTimeout
from flowc.runtime import local_provider
from flowc.runtime.client import ModelClient
from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.local_profiles import gguf_path
from flowc.runtime.policy import ModelPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

QUESTION = chat("Answer in one word.", "What is the capital of France?")


async def test_local_smollm2_through_the_model_client() -> None:
    lm = ModelClient()
    req = LMRequest(model="local/smollm2", messages=QUESTION, max_tokens=8, node="answer")
    first = await lm.complete(req)
    assert first.text.strip()
    assert first.model == "local/smollm2" and first.cost_usd == 0.0
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= 8
    # Greedy decoding is deterministic: the same request gives the same text.
    again = await lm.complete(req)
    assert again.text == first.text


async def test_gguf_path_id_shares_the_loaded_model_and_honours_stop() -> None:
    path = gguf_path("smollm2")
    lm = ModelClient()
    by_profile = await lm.complete(LMRequest(model="local/smollm2", messages=QUESTION, max_tokens=12))
    by_path = LMRequest(model=f"local/gguf:{path}", messages=QUESTION, max_tokens=12)
    assert (await lm.complete(by_path)).text == by_profile.text
    assert local_provider.load("local/smollm2") is local_provider.load(f"local/gguf:{path}")
    # Stop at the greedy answer's last word: the answer is cut just before it.
    text = by_profile.text
    last = text.split()[-1]
    cut = text[: text.index(last)].strip()  # a stop sequence cuts at its first occurrence
    if not cut:
        pytest.skip(f"the greedy answer {text!r} has one word; nothing to cut")
    stopped = await lm.complete(by_path.model_copy(update={"stop": (last,)}))
    assert stopped.text.strip() == cut


async def test_concurrent_local_calls_complete() -> None:
    lm = ModelClient()
    reqs = [LMRequest(model="local/smollm2", messages=chat(None, f"Say {w}."), max_tokens=4) for w in ("a", "b", "c")]
    results = await asyncio.gather(*(lm.complete(r) for r in reqs))
    assert all(r.completion_tokens > 0 for r in results)


async def test_served_model_answers_through_openai_route() -> None:
    served = local_provider.serve_model("smollm2")
    try:
        assert served.base_url.startswith("http://127.0.0.1:")
        lm = ModelClient({"openai/smollm2": ModelPolicy(api_base=served.base_url, retries=0, timeout_s=60)})
        r = await lm.complete(LMRequest(model="openai/smollm2", messages=QUESTION, max_tokens=8, node="n"))
        assert r.text.strip() and 0 < r.completion_tokens <= 8
        # `constrained: true` on a served model: llama.cpp's server reads the grammar from the body.
        held = LMRequest(
            model="openai/smollm2", messages=QUESTION, max_tokens=8, constraint={"grammar": 'root ::= "Lyon" | "Nice"'}
        )
        assert (await lm.complete(held)).text in ("Lyon", "Nice")
    finally:
        served.stop()
    # Stopped means stopped: the port no longer answers.
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.base_url + "/models", timeout=2)
    lm = ModelClient({"openai/smollm2": ModelPolicy(api_base=served.base_url, retries=0, timeout_s=5)})
    with pytest.raises(LMConnectionError):
        await lm.complete(LMRequest(model="openai/smollm2", messages=QUESTION, max_tokens=2))


async def test_local_timeout_is_typed_and_the_model_stays_usable() -> None:
    lm = ModelClient({"local/smollm2": ModelPolicy(retries=0)})
    long = LMRequest(
        model="local/smollm2", messages=chat(None, "Write a long story."), max_tokens=400, timeout_s=0.05, node="writer"
    )
    with pytest.raises(LMTimeout) as info:
        await lm.complete(long)
    assert info.value.node == "writer" and info.value.model == "local/smollm2"
    # llama.cpp stops decoding the abandoned call (t_max_predict_ms), so the next one is served.
    r = await lm.complete(LMRequest(model="local/smollm2", messages=QUESTION, max_tokens=4))
    assert r.completion_tokens > 0


def test_serve_forever_stops_cleanly_on_sigterm() -> None:
    import signal
    import subprocess
    import sys

    code = (
        "from flowc.runtime import local_provider as lp\n"
        "s = lp.serve_model('smollm2')\n"
        "print(s.base_url, flush=True)\n"
        "lp.serve_forever(s)\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert httpx.get(url + "/models", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # a clean exit, not death by signal
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=2)
