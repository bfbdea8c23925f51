"""Runtime benchmarks of issue 3: overhead per LM call, fan-out, batch concurrency, cached rerun,
embedded-model throughput through the executor.

    .venv/bin/python benchmarks/bench_runtime.py [--sections a,b,c,d,e] [--runs 150] [--rounds 3]

Every figure is a ratio measured side by side in one run, against an OpenAI-compatible fake server
(flowc.testing.fake_server) started in its own process, as in bench_lm_overhead.py, so only the
clients' work is on the measured process. The server's latency is chosen per request by the model
name: `openai/fake` answers at once, `openai/fake-100ms` after 100 ms.

(a) Overhead per LM call. One 4-node chain (rewrite -> draft -> critique -> answer, four `llm`
    nodes) run by flowc's Executor (ModelClient, no cache, no store), the same four requests
    (captured from flowc's first run) made with raw `litellm.acompletion`, and DSPy: a dspy.Module
    of four chained dspy.Predict, with litellm as its transport (`engine="litellm"`, the same HTTP
    path as flowc) and with its default engine (its own HTTP client). Plain httpx POSTs are the
    floor. Every litellm call carries the same 60 s timeout (flowc's default for a model; litellm
    itself does measurably more work per call when given one, shown by a row without it). One
    pipeline run of each system in turn, in a rotating order, so load drift hits all alike.
    Reported: the median wall ms per call (run time / 4) and the mean CPU ms per call of this
    process (the server runs in another; CPU time is far less disturbed by other processes on a
    shared machine than wall time), flowc's overhead over raw litellm and DSPy's, and their ratio
    (goal <= 0.25), on both bases. Then each system's own work per call with `litellm.acompletion`
    stubbed out (no I/O, no litellm), with a cProfile of the Executor's hot path, and the cost of
    the run store (open_executor with store on, cache off).
(b) Fan-out: 8 independent `llm` branches at 100 ms per call joined by one `llm` node; wall time
    vs the critical path (2 calls: 0.2 s). Goal <= 1.2x.
(c) Batch: 200 inputs at concurrency 16 through a 1-call pipeline at 100 ms; wall vs the ideal
    200 / 16 x 0.1 s = 1.25 s. Goal <= 1.2x. Beside it, the same batch as raw litellm calls and as
    plain httpx POSTs (the floor without litellm), under the same semaphore.
(d) Cached rerun: the same batch twice through open_executor (cache on): LM calls reaching the
    model on the second pass (goal 0), and its wall time.
(e) Embedded model: tokens/s of `local/smollm2` through the Executor (a 1-node pipeline) vs
    xllamacpp's `handle_chat_completions` directly, same messages, greedy, same max_tokens,
    interleaved prompt by prompt (bench_local_throughput.py's approach). Goal >= 0.9.

Writes benchmarks/results/runtime.json. Never used as a timed test: the figures depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", str(ROOT / ".cache" / "dspy-bench"))

from _common import package_version, write_results  # noqa: E402

KEY = "no-key-needed"
OUT = ROOT / "benchmarks" / "results" / "runtime.json"

# -- the fake server ---------------------------------------------------------------------------------


def _reply_for(body: dict[str, Any]) -> Any:
    """The server's answer: latency from the model name; DSPy's ChatAdapter gets its field markers."""
    from flowc.testing.fake_server import Reply

    model = str(body.get("model", ""))
    latency = float(model.rsplit("-", 1)[1].removesuffix("ms")) / 1000 if model.endswith("ms") else 0.0
    messages = body.get("messages") or []
    if any("[[ ## completed ## ]]" in str(m.get("content", "")) for m in messages if isinstance(m, dict)):
        text = "".join(f"[[ ## {f} ## ]]\nok\n\n" for f in ("query", "draft", "critique", "answer"))
        text += "[[ ## completed ## ]]"
    else:
        text = "ok"
    return Reply(text=text, latency_s=latency)


def serve() -> None:
    """`bench_runtime.py --serve`: the fake server in this process, URL on the first stdout line."""
    import signal
    import threading

    from flowc.testing.fake_server import FakeOpenAIServer

    srv = FakeOpenAIServer(default=_reply_for, record=False).start()
    print(srv.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.stop()


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.terminate()
        raise SystemExit(f"fake server did not start: {url!r}")
    return proc, url


# -- specs -------------------------------------------------------------------------------------------

CHAIN4 = """
pipeline chain4 {
  input question: str
  output answer: str <- answer.answer
  model m = "MODEL" {
    api_base: "URL"
    max_tokens: 16
    timeout: 60
  }
  node rewrite: llm {
    system: "You rewrite questions."
    prompt: "Rewrite as a search query: {{question}}"
    question <- question
    output query: str
  }
  node draft: llm {
    system: "You draft answers."
    prompt: "Query: {{query}}\\nDraft an answer."
    query <- rewrite.query
    output draft: str
  }
  node critique: llm {
    system: "You critique drafts."
    prompt: "Draft: {{draft}}\\nCritique it."
    draft <- draft.draft
    output critique: str
  }
  node answer: llm {
    system: "You answer briefly."
    prompt: "Question: {{question}}\\nDraft: {{draft}}\\nCritique: {{critique}}\\nFinal answer."
    question <- question
    draft <- draft.draft
    critique <- critique.critique
    output answer: str
  }
}
"""

ONE_CALL = """
pipeline one_call {
  input question: str
  output answer: str <- answer.answer
  model m = "MODEL" {
    api_base: "URL"
    max_tokens: 16
  }
  node answer: llm {
    system: "You answer briefly."
    prompt: "Question: {{question}}"
    question <- question
    output answer: str
  }
}
"""

LOCAL_ONE = """
pipeline local_one {
  input prompt: str
  output text: str <- gen.text
  model m = "MODEL" {
    max_tokens: MAXTOK
  }
  node gen: llm {
    system: "SYSTEM"
    prompt: "{{prompt}}"
    prompt <- prompt
    output text: str
  }
}
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


def compile_spec(text: str, **subs: str) -> Any:
    import flowc

    for k, v in subs.items():
        text = text.replace(k, v)
    return flowc.compile(text)


def executor_for(compiled: Any) -> Any:
    from flowc.runtime.client import ModelClient
    from flowc.runtime.executor import Executor
    from flowc.runtime.session import policies

    return Executor(compiled, lm=ModelClient(policies(compiled)))


def _check(result: Any) -> Any:
    if result.status != "ok":
        raise SystemExit(f"pipeline run failed: {result.error_code}: {result.error}")
    return result


# -- (a) overhead per call ------------------------------------------------------------------------------

Run = Callable[[], Awaitable[Any]]


async def _make_systems(url: str, notes: list[str], with_store: Path) -> dict[str, Run]:
    import httpx
    import litellm

    from flowc.runtime.lm import LMRequest, LMResponse
    from flowc.runtime.session import open_executor

    compiled = compile_spec(CHAIN4, MODEL="openai/fake", URL=url)
    ex = executor_for(compiled)
    question = {"question": "Which city hosted the 1900 Summer Olympics?"}

    # The requests flowc sends, captured once, so raw litellm and httpx send exactly the same.
    captured: list[LMRequest] = []
    inner = ex.lm

    class Capture:
        async def complete(self, request: LMRequest) -> LMResponse:
            captured.append(request)
            resp: LMResponse = await inner.complete(request)
            return resp

    ex.lm = Capture()
    _check(await ex.run(question))
    ex.lm = inner
    calls = [[{"role": m.role, "content": m.content} for m in r.messages] for r in captured]
    assert len(calls) == 4

    async def flowc_run() -> Any:
        return _check(await ex.run(question))

    stored = open_executor(compiled, root=with_store, cache=False, store=True)

    async def flowc_store_run() -> Any:
        return _check(await stored.run(question))

    async def raw_litellm(timeout: float | None = 60.0) -> Any:
        out = None
        extra = {"timeout": timeout} if timeout is not None else {}
        for messages in calls:
            r = await litellm.acompletion(
                model="openai/fake",
                messages=messages,
                api_base=url,
                api_key=KEY,
                temperature=0.0,
                max_tokens=16,
                max_retries=0,
                num_retries=0,
                **extra,
            )
            out = r.choices[0].message.content
        return out

    async def raw_litellm_no_timeout() -> Any:
        return await raw_litellm(None)

    http = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"})

    async def plain_httpx() -> Any:
        out = None
        for messages in calls:
            r = await http.post(
                "/chat/completions", json={"model": "fake", "messages": messages, "temperature": 0.0, "max_tokens": 16}
            )
            r.raise_for_status()
            out = r.json()["choices"][0]["message"]["content"]
        return out

    systems: dict[str, Run] = {
        "httpx (plain HTTP)": plain_httpx,
        "litellm.acompletion": raw_litellm,
        "litellm.acompletion (no timeout)": raw_litellm_no_timeout,
        "flowc Executor": flowc_run,
        "flowc open_executor (store on, cache off)": flowc_store_run,
    }
    try:
        import dspy
    except ImportError as e:
        notes.append(f"DSPy skipped: cannot import dspy ({e}); pip install 'flowc[dspy]' to include it")
        return systems

    class Chain(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.rewrite = dspy.Predict("question -> query")
            self.draft = dspy.Predict("query -> draft")
            self.critique = dspy.Predict("draft -> critique")
            self.answer = dspy.Predict("question, draft, critique -> answer")

        async def aforward(self, question: str) -> Any:
            q = (await self.rewrite.acall(question=question)).query
            d = (await self.draft.acall(query=q)).draft
            c = (await self.critique.acall(draft=d)).critique
            return await self.answer.acall(question=question, draft=d, critique=c)

    program = Chain()
    for engine in ("litellm", "auto"):
        lm = dspy.LM(
            "openai/fake",
            api_base=url,
            api_key=KEY,
            cache=False,
            temperature=0.0,
            max_tokens=16,
            num_retries=0,
            timeout=60,
            engine=engine,
        )

        async def dspy_run(lm: Any = lm) -> Any:
            with dspy.context(lm=lm), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = await program.acall(question=question["question"])
            if pred.answer != "ok":
                raise SystemExit(f"DSPy program answered {pred.answer!r}")
            return pred

        systems[f"DSPy {dspy.__version__} Module (engine={engine})"] = dspy_run
    return systems


async def _measure(systems: dict[str, Run], runs: int, rounds: int, calls_per_run: int) -> dict[str, Any]:
    for fn in systems.values():  # warm up: imports, connection pools, lazy setup
        for _ in range(10):
            await fn()
    names = list(systems)
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(runs):
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                c0, t0 = time.process_time(), time.perf_counter()
                await systems[name]()
                times[name].append((time.perf_counter() - t0) * 1000 / calls_per_run)
                cpu[name].append((time.process_time() - c0) * 1000 / calls_per_run)
        for name, ts in times.items():
            samples[name].extend(ts)
            round_medians[name].append(statistics.median(ts))
    out = {}
    for name, ts in samples.items():
        ts.sort()
        out[name] = {
            "median_ms_per_call": statistics.median(ts),
            "p90_ms_per_call": ts[int(0.9 * (len(ts) - 1))],
            "median_of_round_medians_ms": statistics.median(round_medians[name]),
            "mean_cpu_ms_per_call": statistics.fmean(cpu[name]),
            "pipeline_runs": len(ts),
        }
    return out


def _stub_acompletion() -> Callable[..., Awaitable[Any]]:
    """A stand-in for `litellm.acompletion`: the fake server's answer, built in process."""
    import litellm

    async def stub(**kwargs: Any) -> Any:
        text = _reply_for({"model": kwargs.get("model", ""), "messages": kwargs.get("messages") or []}).text
        return litellm.ModelResponse(
            model="fake",
            choices=[{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            usage={"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        )

    return stub


async def _own_work(url: str, runs: int, rounds: int, profile_out: Path | None) -> dict[str, Any]:
    """Each system's own work per call: `litellm.acompletion` replaced by a coroutine that builds the
    server's answer in process, so no I/O and no litellm remain, only what the system itself does
    around the call (flowc: scheduling, prompts, parsing, records, ModelClient's request and
    response handling; DSPy: its adapter, signatures, callbacks). CPU-bound and in one process, so
    this is far less sensitive to a loaded machine than (a)'s end-to-end figures."""
    import litellm

    stub = _stub_acompletion()
    real = litellm.acompletion
    litellm.acompletion = stub
    notes: list[str] = []
    try:
        systems = await _make_systems(url, notes, Path(tempfile.mkdtemp(prefix="flowc-bench-")))
        keep = ("litellm.acompletion", "flowc Executor", "flowc open_executor (store on, cache off)")
        chosen = {k: v for k, v in systems.items() if k in keep or "engine=litellm" in k}
        chosen = {("stub (4 calls)" if k == "litellm.acompletion" else k): v for k, v in chosen.items()}
        results = await _measure(chosen, runs, rounds, 4)
        top: list[str] = []
        if profile_out is not None:
            import cProfile
            import io
            import pstats

            flowc_run = chosen["flowc Executor"]
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(runs):
                await flowc_run()
            prof.disable()
            profile_out.parent.mkdir(parents=True, exist_ok=True)
            prof.dump_stats(profile_out)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            top = [line for line in buf.getvalue().splitlines() if line.strip()]
    finally:
        litellm.acompletion = real
    base = results["stub (4 calls)"]
    out: dict[str, Any] = {"per_call_us": {}, "profile_top_tottime": top}
    for name, r in results.items():
        out["per_call_us"][name] = {
            "median_us_per_call": (r["median_ms_per_call"] - base["median_ms_per_call"]) * 1000,
            "mean_cpu_us_per_call": (r["mean_cpu_ms_per_call"] - base["mean_cpu_ms_per_call"]) * 1000,
        }
    flowc = out["per_call_us"]["flowc Executor"]["median_us_per_call"]
    dspy_name = next((k for k in results if "engine=litellm" in k), None)
    if dspy_name is not None:
        dspy_us = out["per_call_us"][dspy_name]["median_us_per_call"]
        out["ratio flowc/dspy own work"] = flowc / dspy_us if dspy_us > 0 else None
    return out


def section_a(url: str, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:

        async def go() -> dict[str, Any]:
            systems = await _make_systems(url, notes, Path(tmp))
            return await _measure(systems, args.runs, args.rounds, 4)

        results = asyncio.run(go())
    own = asyncio.run(
        _own_work(url, args.runs * 2, args.rounds, Path(tempfile.gettempdir()) / "flowc_bench_runtime_executor.prof")
    )
    out: dict[str, Any] = {"per_call_ms": results, "own_work": own}
    for metric in ("median_ms_per_call", "mean_cpu_ms_per_call"):
        raw = results["litellm.acompletion"][metric]
        flowc = results["flowc Executor"][metric]
        m: dict[str, Any] = {"flowc_overhead_ms": flowc - raw}
        for name, r in results.items():
            if name.startswith("DSPy"):
                key = "engine=litellm" if "litellm" in name else "engine=auto"
                over = r[metric] - raw
                m[f"dspy_overhead_ms ({key})"] = over
                m[f"ratio ({key})"] = (flowc - raw) / over if over > 0 else None
        out["wall" if metric.startswith("median") else "cpu"] = m
    return out


# -- (b) fan-out, (c) batch, (d) cached rerun -------------------------------------------------------------


async def _raw_call(url: str, text: str) -> Any:
    import litellm

    r = await litellm.acompletion(
        model="openai/fake-100ms",
        messages=[{"role": "user", "content": text}],
        api_base=url,
        api_key=KEY,
        temperature=0.0,
        max_tokens=16,
        max_retries=0,
        num_retries=0,
        timeout=60,
    )
    return r.choices[0].message.content


def section_b(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """flowc's fan-out side by side with the same shape in raw litellm (8 gathered calls, then one)."""
    compiled = compile_spec(fanout_spec(8), MODEL="openai/fake-100ms", URL=url)
    ex = executor_for(compiled)

    async def raw(i: int) -> None:
        await asyncio.gather(*(_raw_call(url, f"aspect {b} of question {i}") for b in range(8)))
        await _raw_call(url, f"join {i}")

    async def go() -> tuple[list[float], list[float]]:
        _check(await ex.run({"question": "warm up"}))
        await raw(-1)
        walls, raws = [], []
        for i in range(args.fanout_runs):
            for side in ("flowc", "raw") if i % 2 == 0 else ("raw", "flowc"):
                t0 = time.perf_counter()
                if side == "flowc":
                    res = _check(await ex.run({"question": f"question {i}"}))
                    assert len(res.lm_calls) == 9
                    walls.append(time.perf_counter() - t0)
                else:
                    await raw(i)
                    raws.append(time.perf_counter() - t0)
        return walls, raws

    walls, raws = asyncio.run(go())
    wall, raw_wall = statistics.median(walls), statistics.median(raws)
    return {
        "branches": 8,
        "latency_s": 0.1,
        "runs": len(walls),
        "wall_s_median": wall,
        "critical_path_s": 0.2,
        "ratio": wall / 0.2,
        "raw_litellm_same_shape_s_median": raw_wall,
        "raw_litellm_ratio": raw_wall / 0.2,
        "sequential_would_be_s": 0.9,
    }


BATCH_SPEC_NOTE = "1-call pipeline, fake server at 100 ms per call"


def _batch_inputs(n: int) -> list[dict[str, str]]:
    return [{"question": f"batch question number {i}"} for i in range(n)]


def section_c(url: str, args: argparse.Namespace) -> dict[str, Any]:
    ex = executor_for(compile_spec(ONE_CALL, MODEL="openai/fake-100ms", URL=url))
    inputs = _batch_inputs(args.batch)

    async def batch_of(call: Callable[[str], Awaitable[Any]]) -> tuple[float, float]:
        """Wall and CPU seconds of the batch made with `call`, under the same semaphore."""
        sem = asyncio.Semaphore(args.concurrency)

        async def one(x: dict[str, str]) -> Any:
            async with sem:
                return await call(x["question"])

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(x) for x in inputs))
        return time.perf_counter() - t0, time.process_time() - c0

    async def go() -> tuple[float, float, float, float, float, float]:
        import httpx

        await ex.run_batch(_batch_inputs(args.concurrency), concurrency=args.concurrency)  # warm up
        c0, t0 = time.process_time(), time.perf_counter()
        results = await ex.run_batch(inputs, concurrency=args.concurrency)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        for r in results:
            _check(r)
        raw_wall, raw_cpu = await batch_of(lambda q: _raw_call(url, q))
        # The floor without litellm: the same requests as plain HTTP POSTs.
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"}) as http:

            async def post(q: str) -> Any:
                body = {"model": "fake-100ms", "messages": [{"role": "user", "content": q}], "max_tokens": 16}
                return (await http.post("/chat/completions", json=body)).raise_for_status()

            http_wall, http_cpu = await batch_of(post)
        return wall, cpu, raw_wall, raw_cpu, http_wall, http_cpu

    wall, cpu, raw_wall, raw_cpu, http_wall, http_cpu = asyncio.run(go())
    ideal = args.batch / args.concurrency * 0.1
    return {
        "inputs": args.batch,
        "concurrency": args.concurrency,
        "latency_s": 0.1,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal,
        "cpu_s": cpu,
        "raw_litellm_wall_s": raw_wall,
        "raw_litellm_ratio": raw_wall / ideal,
        "raw_litellm_cpu_s": raw_cpu,
        "plain_httpx_wall_s": http_wall,
        "plain_httpx_ratio": http_wall / ideal,
        "plain_httpx_cpu_s": http_cpu,
        "ideal_in_whole_waves_s": math.ceil(args.batch / args.concurrency) * 0.1,
    }


def section_d(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from flowc.runtime.cache import CachedLM
    from flowc.runtime.session import open_executor

    compiled = compile_spec(ONE_CALL, MODEL="openai/fake-100ms", URL=url)
    inputs = _batch_inputs(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        ex = open_executor(compiled, root=Path(tmp), cache=True, store=True)
        cached = ex.lm
        assert isinstance(cached, CachedLM)

        async def go() -> list[dict[str, Any]]:
            passes = []
            for _ in range(2):
                misses0, hits0 = cached.misses, cached.hits
                t0 = time.perf_counter()
                results = await ex.run_batch(inputs, concurrency=args.concurrency)
                wall = time.perf_counter() - t0
                for r in results:
                    _check(r)
                passes.append(
                    {
                        "wall_s": wall,
                        "lm_calls_to_model": cached.misses - misses0,
                        "cache_hits": cached.hits - hits0,
                        "calls_marked_cached": sum(c.cached for r in results for c in r.lm_calls),
                    }
                )
            return passes

        passes = asyncio.run(go())
        if ex.store is not None:
            ex.store.close()
        cached.cache.close()
    return {
        "inputs": args.batch,
        "concurrency": args.concurrency,
        "first_pass": passes[0],
        "second_pass": passes[1],
        "second_pass_lm_calls": passes[1]["lm_calls_to_model"],
    }


# -- (e) embedded model --------------------------------------------------------------------------------

LOCAL_SYSTEM = "You are a helpful assistant."
LOCAL_PROMPTS = [
    "Write a short story about a cat who learns to sail.",
    "Explain why the sky is blue to a ten-year-old.",
    "List some tips for learning a new language.",
    "Describe the city of Paris in a few sentences.",
    "What are the benefits of regular exercise?",
    "Write a poem about the ocean at night.",
    "How does a bicycle stay upright while moving?",
    "Give a recipe for a simple tomato soup.",
]


def section_e(args: argparse.Namespace) -> dict[str, Any]:
    from flowc.runtime import local_provider

    model = args.local_model
    t0 = time.perf_counter()
    loaded = local_provider.load(model)
    load_s = time.perf_counter() - t0
    compiled = compile_spec(LOCAL_ONE, MODEL=model, MAXTOK=str(args.max_tokens), SYSTEM=LOCAL_SYSTEM)
    ex = executor_for(compiled)
    prompts = LOCAL_PROMPTS[: args.local_prompts]

    def direct(prompt: str) -> tuple[int, float, str]:
        body = {
            "messages": [{"role": "system", "content": LOCAL_SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }
        t = time.perf_counter()
        out: dict[str, Any] = loaded.server.handle_chat_completions(body)
        dt = time.perf_counter() - t
        return int(out["usage"]["completion_tokens"]), dt, out["choices"][0]["message"]["content"]

    async def via_flowc(prompt: str) -> tuple[int, float, str]:
        t = time.perf_counter()
        r = _check(await ex.run({"prompt": prompt}))
        dt = time.perf_counter() - t
        (call,) = r.lm_calls
        return call.completion_tokens, dt, r.outputs["text"]

    async def go() -> dict[str, Any]:
        direct(prompts[0])  # warm up both paths
        await via_flowc(prompts[0])
        totals = {"direct": [0, 0.0], "flowc": [0, 0.0]}
        per_call: dict[str, list[float]] = {"direct": [], "flowc": []}
        same = 0
        for r in range(args.local_rounds):
            for i, prompt in enumerate(prompts):
                order = ("direct", "flowc") if (i + r) % 2 == 0 else ("flowc", "direct")
                texts = {}
                for side in order:
                    tokens, dt, text = direct(prompt) if side == "direct" else await via_flowc(prompt)
                    totals[side][0] += tokens
                    totals[side][1] += dt
                    per_call[side].append(round(dt, 3))
                    texts[side] = text.strip()
                same += texts["direct"] == texts["flowc"]
        out: dict[str, Any] = {
            side: {"completion_tokens": t, "seconds": s, "tokens_per_s": t / s} for side, (t, s) in totals.items()
        }
        out["identical_outputs"] = {"count": same, "of": args.local_rounds * len(prompts)}
        out["seconds_per_call"] = per_call
        return out

    res = asyncio.run(go())
    ratio = res["flowc"]["tokens_per_s"] / res["direct"]["tokens_per_s"]
    return {
        "model": model,
        "max_tokens": args.max_tokens,
        "prompts": len(prompts),
        "rounds": args.local_rounds,
        "model_load_s": load_s,
        "results": res,
        "ratio": ratio,
    }


# -- report --------------------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets goal" if ok else "MISSES goal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sections", default="a,b,c,d,e", help="which sections to run (comma-separated)")
    ap.add_argument("--runs", type=int, default=150, help="(a) pipeline runs per system per round")
    ap.add_argument("--rounds", type=int, default=3, help="(a) rounds")
    ap.add_argument("--fanout-runs", type=int, default=10, help="(b) runs")
    ap.add_argument("--batch", type=int, default=200, help="(c, d) batch size")
    ap.add_argument("--concurrency", type=int, default=16, help="(c, d) concurrency")
    ap.add_argument("--local-model", default="local/smollm2", help="(e) embedded model")
    ap.add_argument("--max-tokens", type=int, default=64, help="(e) max_tokens")
    ap.add_argument("--local-prompts", type=int, default=8, help="(e) prompts (at most 8)")
    ap.add_argument("--local-rounds", type=int, default=1, help="(e) rounds over the prompts")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    notes: list[str] = []
    report: dict[str, Any] = {}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    started = time.time()

    proc, url = start_server() if sections & {"a", "b", "c", "d"} else (None, "")
    try:
        if "a" in sections:
            report["a_overhead_per_call"] = section_a(url, args, notes)
        if "b" in sections:
            report["b_fanout"] = section_b(url, args)
        if "c" in sections:
            report["c_batch"] = section_c(url, args)
        if "d" in sections:
            report["d_cached_rerun"] = section_d(url, args)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if "e" in sections:
        report["e_embedded_throughput"] = section_e(args)

    print()
    if "a_overhead_per_call" in report:
        a = report["a_overhead_per_call"]
        res = a["per_call_ms"]
        raw = res["litellm.acompletion"]["median_ms_per_call"]
        raw_cpu = res["litellm.acompletion"]["mean_cpu_ms_per_call"]
        print(
            f"(a) Overhead per LM call: 4-node chain, zero-latency loopback server "
            f"({args.rounds} rounds x {args.runs} runs, interleaved; ms per call = run / 4)"
        )
        print(
            f"    {'system':42} {'wall med':>8} {'p90':>7} {'rnd-med':>7} {'over litellm':>12} "
            f"{'CPU mean':>8} {'over litellm':>12}"
        )
        for name, r in res.items():
            print(
                f"    {name:42} {r['median_ms_per_call']:8.3f} {r['p90_ms_per_call']:7.3f} "
                f"{r['median_of_round_medians_ms']:7.3f} {r['median_ms_per_call'] - raw:+12.3f} "
                f"{r['mean_cpu_ms_per_call']:8.3f} {r['mean_cpu_ms_per_call'] - raw_cpu:+12.3f}"
            )
        own = a["own_work"]
        print("    Own work per call, litellm.acompletion stubbed out (minus the stub's own time):")
        for name, r in own["per_call_us"].items():
            print(
                f"      {name:44} {r['median_us_per_call']:8.0f} us (wall median) "
                f"{r['mean_cpu_us_per_call']:8.0f} us (CPU mean)"
            )
        if own.get("ratio flowc/dspy own work") is not None:
            ratio = own["ratio flowc/dspy own work"]
            print(
                f"      flowc own work / DSPy (engine=litellm) own work: {ratio:.2f} -> "
                f"{_verdict(ratio <= 0.25)} (<= 0.25)"
            )
        for basis in ("wall", "cpu"):
            for key in ("engine=litellm", "engine=auto"):
                if f"dspy_overhead_ms ({key})" not in a[basis]:
                    continue
                ratio = a[basis][f"ratio ({key})"]
                shown = (
                    f"{ratio:.2f} -> {_verdict(ratio <= 0.25)} (<= 0.25)"
                    if ratio is not None
                    else "undefined (DSPy is not slower than raw litellm)"
                )
                print(
                    f"    [{basis}] flowc overhead {a[basis]['flowc_overhead_ms']:+.3f} ms / DSPy ({key}) "
                    f"overhead {a[basis][f'dspy_overhead_ms ({key})']:+.3f} ms = {shown}"
                )
    if "b_fanout" in report:
        b = report["b_fanout"]
        print(
            f"(b) Fan-out 8 x 100 ms + join: wall {b['wall_s_median']:.3f} s vs critical path 0.200 s: "
            f"{b['ratio']:.2f}x -> {_verdict(b['ratio'] <= 1.2)} (<= 1.2); "
            f"raw litellm, same shape: {b['raw_litellm_same_shape_s_median']:.3f} s ({b['raw_litellm_ratio']:.2f}x)"
        )
    if "c_batch" in report:
        c = report["c_batch"]
        print(
            f"(c) Batch {c['inputs']} @ concurrency {c['concurrency']}, 100 ms/call: wall {c['wall_s']:.3f} s "
            f"vs ideal {c['ideal_s']:.3f} s: {c['ratio']:.2f}x -> {_verdict(c['ratio'] <= 1.2)} (<= 1.2); "
            f"CPU {c['cpu_s']:.2f} s; raw litellm, same batch: {c['raw_litellm_wall_s']:.3f} s "
            f"({c['raw_litellm_ratio']:.2f}x), CPU {c['raw_litellm_cpu_s']:.2f} s; plain httpx: "
            f"{c.get('plain_httpx_wall_s', float('nan')):.3f} s ({c.get('plain_httpx_ratio', float('nan')):.2f}x), "
            f"CPU {c.get('plain_httpx_cpu_s', float('nan')):.2f} s"
        )
    if "d_cached_rerun" in report:
        d = report["d_cached_rerun"]
        print(
            f"(d) Cached rerun of the batch: pass 1 {d['first_pass']['lm_calls_to_model']} LM calls "
            f"in {d['first_pass']['wall_s']:.3f} s; pass 2 {d['second_pass_lm_calls']} LM calls "
            f"({d['second_pass']['cache_hits']} cache hits) in {d['second_pass']['wall_s']:.3f} s "
            f"-> {_verdict(d['second_pass_lm_calls'] == 0)} (0)"
        )
    if "e_embedded_throughput" in report:
        e = report["e_embedded_throughput"]
        r = e["results"]
        print(
            f"(e) {e['model']} ({e['prompts']} prompts x {e['rounds']} rounds, max_tokens {e['max_tokens']}): "
            f"direct {r['direct']['tokens_per_s']:.1f} tok/s, flowc Executor {r['flowc']['tokens_per_s']:.1f} "
            f"tok/s: {e['ratio']:.3f} -> {_verdict(e['ratio'] >= 0.9)} (>= 0.9); identical outputs "
            f"{r['identical_outputs']['count']}/{r['identical_outputs']['of']}"
        )
    for n in notes:
        print("note:", n)

    # Sections not run this time keep their previous figures (each section is measured side by side).
    merged = dict(previous.get("sections", {}))
    merged.update(report)
    write_results(
        args.out,
        {
            "benchmark": "runtime",
            "sections": merged,
            "last_run": {
                "sections": sorted(sections),
                "args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
                "seconds": time.time() - started,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "versions": {p: package_version(p) for p in ("litellm", "httpx", "dspy", "xllamacpp")},
            "notes": notes,
        },
    )


if __name__ == "__main__":
    main()
