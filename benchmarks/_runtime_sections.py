"""Sections (b) to (h) of bench_runtime.py: fan-out, batch, cached rerun, embedded model, start-up,
HTTP clients. Each measures its systems side by side in one run; see bench_runtime.py's docstring."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _runtime_systems as rs

LATENCY_S = 0.1


# -- (b) fan-out -------------------------------------------------------------------------------------


def section_b(url: str, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    import aiohttp

    ex = rs.executor_for(rs.compile_spec(rs.fanout_spec(8), "openai/fake-100ms", url))
    critical = 2 * LATENCY_S

    async def go() -> dict[str, list[float]]:
        session = aiohttp.ClientSession()

        async def post(text: str) -> Any:
            body = {"model": "fake-100ms", "messages": [{"role": "user", "content": text}], "max_tokens": 16}
            async with session.post(url + "/chat/completions", json=body) as r:
                return await r.read()

        async def plain(i: int) -> None:
            await asyncio.gather(*(post(f"aspect {b} of question {i}") for b in range(8)))
            await post(f"join {i}")

        async def flowc(i: int) -> None:
            res = rs.check(await ex.run({"question": f"question {i}"}))
            assert len(res.lm_calls) == 9

        systems = {"flowc": flowc, "aiohttp (same shape)": plain}
        try:
            import dspy

            lm = rs.dspy_lm(url, "auto", "openai/fake-100ms")
            branch = dspy.Predict("question -> query")
            join = dspy.Predict("question, critique -> answer")

            async def dspy_fanout(i: int) -> None:
                with dspy.context(lm=lm), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    notes_ = await asyncio.gather(*(branch.acall(question=f"aspect {b} of {i}") for b in range(8)))
                    await join.acall(question=f"q {i}", critique="\n".join(n.query for n in notes_))

            systems[f"DSPy {dspy.__version__} (default engine)"] = dspy_fanout
        except ImportError:
            notes.append("(b) DSPy row skipped: dspy is not installed")
        times: dict[str, list[float]] = {k: [] for k in systems}
        for fn in systems.values():
            await fn(-1)
        for i in range(args.fanout_runs):
            order = list(systems)
            k = i % len(order)
            for name in order[k:] + order[:k]:
                t0 = time.perf_counter()
                await systems[name](i)
                times[name].append(time.perf_counter() - t0)
        await session.close()
        return times

    times = asyncio.run(go())
    return {
        "branches": 8,
        "latency_s": LATENCY_S,
        "critical_path_s": critical,
        "runs": args.fanout_runs,
        "systems": {
            k: {"wall_s_median": statistics.median(v), "ratio": statistics.median(v) / critical}
            for k, v in times.items()
        },
    }


# -- (c) batch ---------------------------------------------------------------------------------------


def section_c(url: str, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    calls = 3
    inputs = [{"question": f"batch question number {i}"} for i in range(args.batch)]
    ideal = args.batch / args.concurrency * calls * LATENCY_S
    out: dict[str, Any] = {
        "inputs": args.batch,
        "calls_per_pipeline": calls,
        "concurrency": args.concurrency,
        "ideal_s": ideal,
        "ideal_in_whole_waves_s": math_ceil(args.batch / args.concurrency) * calls * LATENCY_S,
    }
    for label, model in (("latency_100ms", "openai/fake-100ms"), ("latency_0", "openai/fake")):
        ex = rs.executor_for(rs.compile_spec(rs.chain_spec(calls), model, url))

        async def flowc_batch(ex: Any = ex) -> float:
            await ex.run_batch(inputs[: args.concurrency], concurrency=args.concurrency)  # warm up
            t0 = time.perf_counter()
            results = await ex.run_batch(inputs, concurrency=args.concurrency)
            wall = time.perf_counter() - t0
            for r in results:
                rs.check(r)
            return wall

        rows: dict[str, float] = {"flowc run_batch": asyncio.run(flowc_batch())}
        dspy_wall = _dspy_batch(url, model, inputs, args.concurrency, calls, notes)
        if dspy_wall is not None:
            import dspy

            rows[f"DSPy {dspy.__version__} Module.batch (default engine, {args.concurrency} threads)"] = dspy_wall
        if label == "latency_100ms":
            out[label] = {k: {"wall_s": v, "ratio": v / ideal} for k, v in rows.items()}
        else:
            out[label] = {k: {"wall_s": v, "pipelines_per_s": args.batch / v} for k, v in rows.items()}
    return out


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


def _dspy_batch(
    url: str, model: str, inputs: list[dict[str, str]], threads: int, calls: int, notes: list[str]
) -> float | None:
    program = rs.dspy_program(calls)
    if program is None:
        notes.append("(c) DSPy rows skipped: dspy is not installed")
        return None
    import dspy

    lm = rs.dspy_lm(url, "auto", model)
    examples = [dspy.Example(**x).with_inputs("question") for x in inputs]
    with dspy.context(lm=lm), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program.batch(examples[:threads], num_threads=threads, disable_progress_bar=True)  # warm up
        t0 = time.perf_counter()
        results = program.batch(examples, num_threads=threads, disable_progress_bar=True)
        wall = time.perf_counter() - t0
    if len(results) != len(inputs) or any(getattr(r, program.output, None) != "ok" for r in results):
        raise SystemExit("DSPy's batch did not answer every example")
    return wall


# -- (d) cached rerun --------------------------------------------------------------------------------


def section_d(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from flowc.runtime.cache import CachedLM
    from flowc.runtime.session import open_executor

    compiled = rs.compile_spec(rs.chain_spec(1), "openai/fake-100ms", url)
    inputs = [{"question": f"batch question number {i}"} for i in range(args.batch)]
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
                    rs.check(r)
                passes.append(
                    {"wall_s": wall, "lm_calls_to_model": cached.misses - misses0, "cache_hits": cached.hits - hits0}
                )
            return passes

        passes = asyncio.run(go())
        if ex.store is not None:
            ex.store.close()
        cached.cache.close()
    return {
        "inputs": args.batch,
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
LOCAL_ONE = """
pipeline local_one {
  input prompt: str
  output text: str <- gen.text
  model m = "MODEL" { max_tokens: MAXTOK }
  node gen: llm {
    system: "SYSTEM"
    prompt: "{{prompt}}"
    prompt <- prompt
    output text: str
  }
}
"""


def section_e(args: argparse.Namespace) -> dict[str, Any]:
    import flowc
    from flowc.runtime import local_provider

    loaded = local_provider.load(args.local_model)
    text = LOCAL_ONE.replace("MODEL", args.local_model).replace("MAXTOK", str(args.max_tokens))
    ex = rs.executor_for(flowc.compile(text.replace("SYSTEM", LOCAL_SYSTEM)))
    prompts = LOCAL_PROMPTS[: args.local_prompts]

    def direct(prompt: str) -> tuple[int, float]:
        body = {
            "messages": [{"role": "system", "content": LOCAL_SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }
        t = time.perf_counter()
        out: dict[str, Any] = loaded.server.handle_chat_completions(body)
        return int(out["usage"]["completion_tokens"]), time.perf_counter() - t

    async def via_flowc(prompt: str) -> tuple[int, float]:
        t = time.perf_counter()
        r = rs.check(await ex.run({"prompt": prompt}))
        return r.lm_calls[0].completion_tokens, time.perf_counter() - t

    async def go() -> dict[str, list[float]]:
        direct(prompts[0])
        await via_flowc(prompts[0])
        totals = {"direct": [0.0, 0.0], "flowc": [0.0, 0.0]}
        for r in range(args.local_rounds):
            for i, prompt in enumerate(prompts):
                for side in ("direct", "flowc") if (i + r) % 2 == 0 else ("flowc", "direct"):
                    tokens, dt = direct(prompt) if side == "direct" else await via_flowc(prompt)
                    totals[side][0] += tokens
                    totals[side][1] += dt
        return totals

    totals = asyncio.run(go())
    d, f = totals["direct"][0] / totals["direct"][1], totals["flowc"][0] / totals["flowc"][1]
    return {
        "model": args.local_model,
        "max_tokens": args.max_tokens,
        "prompts": len(prompts),
        "direct_tokens_per_s": d,
        "flowc_tokens_per_s": f,
        "ratio": f / d,
    }


# -- (f) start-up --------------------------------------------------------------------------------------

RUN_SPEC = """
pipeline cached_run {
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake" { api_base: "URL" }
  node answer: llm {
    prompt: "Question: {{question}}"
    question <- question
    output answer: str
  }
}
"""


def _wall(cmd: list[str], env: dict[str, str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _imports_litellm(args: list[str], env: dict[str, str]) -> bool:
    code = "import sys; from flowc.cli.main import main; main(sys.argv[1:]); print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1] == "True"


def section_f(url: str) -> dict[str, Any]:
    flowc_bin = str(Path(sys.executable).parent / "flowc")
    spec = str(rs.ROOT / "pipelines" / "agentic_rag.flow")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWC_HOME": str(Path(tmp) / "home")}
        run_spec = Path(tmp) / "cached.flow"
        run_spec.write_text(RUN_SPEC.replace("URL", url))
        run = [flowc_bin, "run", str(run_spec), "--input", "question=What is cached?"]
        subprocess.run(run, env=env, check=True, capture_output=True, timeout=120)  # fills the cache
        return {
            "check_s": _wall([flowc_bin, "check", spec], env),
            "run_cached_s": _wall(run, env),
            "python_bare_s": _wall([sys.executable, "-c", "pass"], env),
            "check_imports_litellm": _imports_litellm(["check", spec], env),
            "run_imports_litellm": _imports_litellm(run[1:], env),
        }


# -- (h) HTTP clients ------------------------------------------------------------------------------------


def section_h(url: str) -> dict[str, Any]:
    import aiohttp
    import httpx

    body = json.dumps(
        {
            "model": "fake",
            "messages": [{"role": "user", "content": "Which city hosted the 1900 Olympics?"}],
            "max_tokens": 16,
        }
    ).encode()
    headers = {"content-type": "application/json"}

    async def go() -> dict[str, Any]:
        session = aiohttp.ClientSession()
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

        async def via_aiohttp() -> Any:
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                return json.loads(await r.read())

        async def via_httpx() -> Any:
            r = await client.post(url + "/chat/completions", content=body, headers=headers)
            return json.loads(r.content)

        fns = {"aiohttp": via_aiohttp, "httpx": via_httpx}
        out: dict[str, Any] = {}
        for fn in fns.values():
            for _ in range(50):
                await fn()
        seq: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(500):
            for k, fn in fns.items():
                c0, t0 = time.process_time(), time.perf_counter()
                await fn()
                seq[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            await rs.gather_limited(16, [fn() for _ in range(2000)])
            wall, used = time.perf_counter() - t0, time.process_time() - c0
            out[k] = {
                "sequential_ms": statistics.median(seq[k]) * 1000,
                "sequential_cpu_ms": statistics.fmean(cpu[k]) * 1000,
                "c16_per_s": 2000 / wall,
                "c16_cpu_ms": used / 2000 * 1000,
            }
        await session.close()
        await client.aclose()
        return out

    return asyncio.run(go())
