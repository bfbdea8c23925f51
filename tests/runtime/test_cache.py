"""The SQLite response cache and the CachedLM wrapper."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flowc.runtime.cache import CachedLM, ResponseCache, cache_key, cacheable
from flowc.runtime.fakes import EchoLM, ScriptedLM
from flowc.runtime.lm import LMRequest, LMResponse, chat


def req(user: str, **kw: object) -> LMRequest:
    return LMRequest(model="m", messages=chat("s", user), **kw)


class PricedLM:
    """Answers with a fixed cost, slowly, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: LMRequest) -> LMResponse:
        self.calls += 1
        await asyncio.sleep(0.01)
        return LMResponse(
            text=f"answer {self.calls}",
            model=request.model,
            prompt_tokens=3,
            completion_tokens=2,
            cost_usd=0.5,
            latency_s=0.01,
        )


async def test_hit_is_cached_and_free(tmp_path: Path) -> None:
    inner = PricedLM()
    lm = CachedLM(inner, ResponseCache(tmp_path / "c.sqlite"), "art1")
    first = await lm.complete(req("q"))
    again = await lm.complete(req("q"))
    assert (first.cached, first.cost_usd) == (False, 0.5)
    assert (again.cached, again.cost_usd, again.text) == (True, 0.0, first.text)
    assert again.prompt_tokens == 3
    assert inner.calls == 1 and (lm.hits, lm.misses) == (1, 1)


async def test_artifact_hash_separates_entries(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    inner = PricedLM()
    await CachedLM(inner, cache, "a").complete(req("q"))
    await CachedLM(inner, cache, "b").complete(req("q"))
    assert inner.calls == 2 and len(cache) == 2
    assert cache_key(req("q"), "a") != cache_key(req("q"), "b")


async def test_sampling_without_seed_bypasses(tmp_path: Path) -> None:
    inner = PricedLM()
    lm = CachedLM(inner, ResponseCache(tmp_path / "c.sqlite"), "a")
    for _ in range(2):
        r = await lm.complete(req("q", temperature=0.7))
        assert not r.cached
    assert inner.calls == 2 and lm.bypassed == 2 and len(lm.cache) == 0
    # with a seed the sample is reproducible: cached
    await lm.complete(req("q", temperature=0.7, seed=1))
    assert (await lm.complete(req("q", temperature=0.7, seed=1))).cached
    assert cacheable(req("q")) and not cacheable(req("q", temperature=1.0))


async def test_concurrent_identical_misses_call_once(tmp_path: Path) -> None:
    inner = PricedLM()
    lm = CachedLM(inner, ResponseCache(tmp_path / "c.sqlite"), "a")
    results = await asyncio.gather(
        *(lm.complete(req("same")) for _ in range(10)), *(lm.complete(req(f"other {i}")) for i in range(5))
    )
    assert inner.calls == 6
    assert sum(r.cached for r in results) == 9
    assert len(lm.cache) == 6


async def test_inner_errors_are_not_cached(tmp_path: Path) -> None:
    boom = RuntimeError("down")
    lm = CachedLM(ScriptedLM([boom, "ok"]), ResponseCache(tmp_path / "c.sqlite"), "a")
    with pytest.raises(RuntimeError):
        await lm.complete(req("q"))
    assert (await lm.complete(req("q"))).text == "ok"


async def test_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    # Write from a child process that dies without closing anything.
    code = (
        "import os\n"
        "from flowc.runtime.cache import ResponseCache\n"
        "from flowc.runtime.lm import LMResponse\n"
        f"c = ResponseCache({str(path)!r})\n"
        "c.put('k1', LMResponse(text='kept', model='m'))\n"
        "os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 9
    cache = ResponseCache(path)
    got = cache.get("k1")
    assert got is not None and got.text == "kept"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_cache_file_holds_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-ant-SECRET-abcdefghijklmnop"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    lm = CachedLM(EchoLM(), cache, "a")
    await lm.complete(req("hello"))
    cache.close()
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes()


def test_memory_cache_and_clear() -> None:
    with ResponseCache(":memory:") as cache:
        cache.put("k", LMResponse(text="t", model="m"))
        assert len(cache) == 1
        cache.clear()
        assert cache.get("k") is None


COUNT_SPEC = """
pipeline counter {
  input text: str
  output n: int <- count.n
  model m = "openai/fake" { api_base: "BASE" }
  node count: llm {
    prompt: "How many words: {{text}}"
    text <- text
    output n: int
  }
}
"""


def test_an_unreadable_reply_is_not_cached_so_a_rerun_asks_again(tmp_path: Path) -> None:
    """A server answering garbage fails the run; once it is fixed, the rerun makes real requests
    instead of replaying the failure from the cache (and a readable reply is cached as before)."""
    import flowc
    from flowc.runtime.session import open_executor
    from flowc.testing.fake_server import FakeOpenAIServer, Reply

    with FakeOpenAIServer(default=Reply(text="no idea")) as srv:
        compiled = flowc.compile(COUNT_SPEC.replace("BASE", srv.base_url))
        ex = open_executor(compiled, root=tmp_path, store=False)
        broken = asyncio.run(ex.run({"text": "one two three"}))
        assert broken.status == "error" and broken.error_code == "output-parse-error"
        assert srv.hits == 2  # the call and its repair, both unreadable
        cached = ex.lm
        assert isinstance(cached, CachedLM) and cached.forgotten == 2 and len(cached.cache) == 0

        srv.default = Reply(text="3")  # the server is fixed
        fixed = asyncio.run(open_executor(compiled, root=tmp_path, store=False).run({"text": "one two three"}))
        assert fixed.status == "ok" and fixed.outputs == {"n": 3}
        assert srv.hits == 3 and not fixed.lm_calls[0].cached

        again = asyncio.run(open_executor(compiled, root=tmp_path, store=False).run({"text": "one two three"}))
        assert again.outputs == {"n": 3} and srv.hits == 3 and again.lm_calls[0].cached


async def test_forget_reaches_the_cache_through_wrappers() -> None:
    from flowc.runtime.cache import forget
    from flowc.runtime.recording import RecordingClient

    cache = ResponseCache(":memory:")
    inner = PricedLM()
    lm = RecordingClient(CachedLM(inner, cache, "art"), [])
    await lm.complete(req("q"))
    assert len(cache) == 1
    forget(lm, req("q"))
    assert len(cache) == 0
    forget(ScriptedLM([]), req("q"))  # no cache anywhere: nothing to do, no error
