"""What bench_runtime.py measures: the fake server in its own process, the specs, and every system
side by side (flowc on each transport, raw litellm, plain aiohttp, DSPy on its default engine and on
litellm), plus the stubs that take the HTTP call away to measure each system's own work.

The fake server answers per model name: `openai/fake` at once, `openai/fake-100ms` after 100 ms;
a DSPy ChatAdapter prompt gets its field markers back.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "no-key-needed"
Run = Callable[[], Awaitable[Any]]
DSPY_FIELDS = ("query", "draft", "critique", "answer")


def reply_for(body: dict[str, Any]) -> Any:
    from flowc.testing.fake_server import Reply

    model = str(body.get("model", ""))
    latency = float(model.rsplit("-", 1)[1].removesuffix("ms")) / 1000 if model.endswith("ms") else 0.0
    return Reply(text=reply_text(body.get("messages") or []), latency_s=latency)


def reply_text(messages: list[Any]) -> str:
    if any("[[ ## completed ## ]]" in str(m.get("content", "")) for m in messages if isinstance(m, dict)):
        return "".join(f"[[ ## {f} ## ]]\nok\n\n" for f in DSPY_FIELDS) + "[[ ## completed ## ]]"
    return "ok"


def serve() -> None:
    """`bench_runtime.py --serve`: the fake server in this process, URL on the first stdout line."""
    import signal
    import threading

    from flowc.testing.fake_server import FakeOpenAIServer

    srv = FakeOpenAIServer(default=reply_for, record=False).start()
    print(srv.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.stop()


@contextmanager
def fake_server(script: Path) -> Iterator[str]:
    """The fake server in its own process (its work stays off the measured one); yields its URL."""
    proc = subprocess.Popen([sys.executable, str(script), "--serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"fake server did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# -- specs -------------------------------------------------------------------------------------------


def chain_spec(n: int) -> str:
    """n chained llm nodes (rewrite -> draft -> critique -> answer, the first n of them)."""
    nodes = [
        (
            "rewrite",
            "You rewrite questions.",
            "Rewrite as a search query: {{question}}",
            ["question <- question"],
            "query",
        ),
        ("draft", "You draft answers.", "Query: {{query}}\\nDraft an answer.", ["query <- rewrite.query"], "draft"),
        ("critique", "You critique drafts.", "Draft: {{draft}}\\nCritique it.", ["draft <- draft.draft"], "critique"),
        (
            "answer",
            "You answer briefly.",
            "Question: {{question}}\\nCritique: {{critique}}\\nAnswer.",
            ["question <- question", "critique <- critique.critique"],
            "answer",
        ),
    ][:n]
    body = "\n".join(
        f'  node {name}: llm {{\n    system: "{system}"\n    prompt: "{prompt}"\n'
        + "".join(f"    {b}\n" for b in binds)
        + f"    output {port}: str\n  }}"
        for name, system, prompt, binds, port in nodes
    )
    last_name, last_port = nodes[-1][0], nodes[-1][4]
    return f"""
pipeline chain{n} {{
  input question: str
  output answer: str <- {last_name}.{last_port}
  model m = "MODEL" {{
    api_base: "URL"
    max_tokens: 16
    timeout: 60
    transport: TRANSPORT
  }}
{body}
}}
"""


def fanout_spec(width: int) -> str:
    branches = "\n".join(
        f"""  node b{i}: llm {{
    system: "You are branch {i}."
    prompt: "Aspect {i} of: {{{{question}}}}"
    question <- question
    output note: str
  }}"""
        for i in range(width)
    )
    joins = "\n".join(f"    n{i} <- b{i}.note" for i in range(width))
    listing = "\\n".join(f"{{{{n{i}}}}}" for i in range(width))
    return f"""
pipeline fanout {{
  input question: str
  output answer: str <- join.answer
  model m = "MODEL" {{
    api_base: "URL"
    max_tokens: 16
    transport: TRANSPORT
  }}
{branches}
  node join: llm {{
    system: "You combine notes."
    prompt: "Notes:\\n{listing}\\nAnswer: {{{{question}}}}"
    question <- question
{joins}
    output answer: str
  }}
}}
"""


def compile_spec(text: str, model: str, url: str, transport: str = "auto") -> Any:
    import flowc

    return flowc.compile(text.replace("MODEL", model).replace("URL", url).replace("TRANSPORT", transport))


def executor_for(compiled: Any) -> Any:
    from flowc.runtime.client import ModelClient
    from flowc.runtime.executor import Executor
    from flowc.runtime.session import policies

    return Executor(compiled, lm=ModelClient(policies(compiled)))


def check(result: Any) -> Any:
    if result.status != "ok":
        raise SystemExit(f"pipeline run failed: {result.error_code}: {result.error}")
    return result


QUESTION = "Which city hosted the 1900 Summer Olympics?"


# -- the systems of (a) ---------------------------------------------------------------------------


async def flowc_systems(url: str, store_root: Path, calls: int) -> tuple[dict[str, Run], list[list[dict[str, str]]]]:
    """flowc on each transport, with and without the run store; and the requests it sends."""
    from flowc.runtime.lm import LMRequest, LMResponse
    from flowc.runtime.session import open_executor

    native = executor_for(compile_spec(chain_spec(calls), "openai/fake", url, "native"))
    via_litellm = executor_for(compile_spec(chain_spec(calls), "openai/fake", url, "litellm"))
    stored = open_executor(native.compiled, root=store_root, cache=False, store=True)
    captured: list[LMRequest] = []
    inner = native.lm

    class Capture:
        async def complete(self, request: LMRequest) -> LMResponse:
            captured.append(request)
            resp: LMResponse = await inner.complete(request)
            return resp

    native.lm = Capture()
    check(await native.run({"question": QUESTION}))
    native.lm = inner
    messages = [[{"role": m.role, "content": m.content} for m in r.messages] for r in captured]

    def runner(ex: Any) -> Run:
        async def go() -> Any:
            return check(await ex.run({"question": QUESTION}))

        return go

    return {
        "flowc (native transport)": runner(native),
        "flowc (native, run store on)": runner(stored),
        "flowc (transport: litellm)": runner(via_litellm),
    }, messages


def raw_systems(url: str, messages: list[list[dict[str, str]]]) -> dict[str, Run]:
    """The same requests made with raw litellm and with a plain aiohttp POST (the floor)."""
    import aiohttp
    import litellm

    session: list[aiohttp.ClientSession] = []

    async def plain_aiohttp() -> Any:
        if not session:
            session.append(aiohttp.ClientSession())
            # closed with its loop, as flowc's own session is (see flowc.runtime.transports.pool)
            keeper = _close_with_loop(session[0])
            await keeper.__anext__()
            session.append(keeper)  # type: ignore[arg-type]
        out = None
        for m in messages:
            body = {"model": "fake", "messages": m, "temperature": 0.0, "max_tokens": 16}
            async with session[0].post(url + "/chat/completions", json=body) as r:
                out = json.loads(await r.read())["choices"][0]["message"]["content"]
        return out

    async def raw_litellm() -> Any:
        out = None
        for m in messages:
            r = await litellm.acompletion(
                model="openai/fake",
                messages=m,
                api_base=url,
                api_key=KEY,
                temperature=0.0,
                max_tokens=16,
                max_retries=0,
                num_retries=0,
                timeout=60,
            )
            out = r.choices[0].message.content
        return out

    return {"aiohttp (plain HTTP)": plain_aiohttp, "litellm.acompletion": raw_litellm}


async def _close_with_loop(session: Any) -> Any:
    try:
        yield
    finally:
        await session.close()


def dspy_program(calls: int) -> Any:
    """A dspy.Module of `calls` chained dspy.Predict, the same shape as flowc's chain; or None."""
    try:
        import dspy
    except ImportError:
        return None
    signatures = ["question -> query", "query -> draft", "draft -> critique", "question, critique -> answer"][:calls]

    class Chain(dspy.Module):  # type: ignore[misc]
        output = signatures[-1].split(" -> ")[1]

        def __init__(self) -> None:
            super().__init__()
            self.steps = [dspy.Predict(s) for s in signatures]

        def forward(self, question: str) -> Any:
            values: dict[str, Any] = {"question": question}
            pred = None
            for step, sig in zip(self.steps, signatures):
                names = [x.strip() for x in sig.split(" -> ")[0].split(",")]
                pred = step(**{k: values[k] for k in names})
                values.update(dict(pred.items()))
            return pred

        async def aforward(self, question: str) -> Any:
            values: dict[str, Any] = {"question": question}
            pred = None
            for step, sig in zip(self.steps, signatures):
                names = [x.strip() for x in sig.split(" -> ")[0].split(",")]
                pred = await step.acall(**{k: values[k] for k in names})
                values.update(dict(pred.items()))
            return pred

    return Chain()


def dspy_lm(url: str, engine: str, model: str = "openai/fake") -> Any:
    import dspy

    return dspy.LM(
        model,
        api_base=url,
        api_key=KEY,
        cache=False,
        temperature=0.0,
        max_tokens=16,
        num_retries=0,
        timeout=60,
        engine=engine,
    )


def dspy_systems(url: str, calls: int, notes: list[str]) -> dict[str, Run]:
    program = dspy_program(calls)
    if program is None:
        notes.append("DSPy skipped: cannot import dspy; pip install 'flowc[dspy]' to include its rows")
        return {}
    import dspy

    out: dict[str, Run] = {}
    for engine, label in (("auto", "default engine"), ("litellm", "engine=litellm")):
        lm = dspy_lm(url, engine)

        async def run(lm: Any = lm) -> Any:
            with dspy.context(lm=lm), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = await program.acall(question=QUESTION)
            if getattr(pred, program.output) != "ok":
                raise SystemExit(f"DSPy program answered {pred!r}")
            return pred

        out[f"DSPy {dspy.__version__} ({label})"] = run
    return out


# -- stubs: the HTTP call taken away ----------------------------------------------------------------


@contextmanager
def stubbed_native() -> Iterator[None]:
    """The native transport's POST answered in process: no socket, no aiohttp."""
    from flowc.runtime.transports import pool

    real = pool.post
    reply = json.dumps(
        {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
    ).encode()

    async def post(url: str, body: bytes, headers: Any, timeout_s: Any, proxy: Any) -> Any:
        return 200, reply, {}  # flowc's chain reads "ok" from every node; the stub's cost stays out

    pool.post = post  # type: ignore[assignment]
    try:
        yield
    finally:
        pool.post = real  # type: ignore[assignment]


@contextmanager
def stubbed_litellm() -> Iterator[None]:
    import litellm

    real = litellm.acompletion

    async def stub(**kwargs: Any) -> Any:
        return litellm.ModelResponse(
            model="fake",
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply_text(kwargs.get("messages") or [])},
                    "finish_reason": "stop",
                }
            ],
            usage={"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        )

    litellm.acompletion = stub
    try:
        yield
    finally:
        litellm.acompletion = real


def env_for_dspy() -> None:
    os.environ.setdefault("DSPY_CACHEDIR", str(ROOT / ".cache" / "dspy-bench"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def gather_limited(n: int, coros: list[Awaitable[Any]]) -> Awaitable[list[Any]]:
    sem = asyncio.Semaphore(n)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return asyncio.gather(*(one(c) for c in coros))
